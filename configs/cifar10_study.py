r"""The paper's grid on CIFAR-10 for accelerators, with the Fashion-MNIST study's design.

  python -m uat_jax.study --study=configs/cifar10_study.py --root=/shared/cifar10_study
  sbatch --array=0-7 launch/slurm.sbatch configs/cifar10_study.py /shared/cifar10_study

Every run starts from configs/cifar10.py (Rice et al.'s PGD-AT recipe: PreAct ResNet-18, eps
8/255, PGD-10 of 2/255, SGD 0.1, 200 epochs decayed at 50% and 75%, 1,000 validation images,
the best checkpoint by validation PGD-20 accuracy every epoch). beta (EntM) and alpha (LS) are
swept on the validation split at seed 0 with the final schedule; AT, AT+EntM and AT+LS run
seeds 0-2, standard, EntM and LS seed 0-1; the ablation of AT+EntM runs seed 0. Evaluation on
the first 2,000 test images with the paper and strong presets at 2, 4, 8, 12 and 16/255 (the
best checkpoint), 8 and 16/255 (the last checkpoint and the ablation); Jacobians of the
adversarially trained runs on 500 test images. Not run yet: the time per run on a GPU is still to
be measured (about 270 images/s for PreAct ResNet-18 PGD-10 in fp32 in Rice et al.'s logs would
make a 200-epoch AT run about 10 hours).

`:wrn` uses WRN-34-10 instead of PreAct ResNet-18.
"""

import ml_collections

ADVERSARIAL = ("at", "at_entm", "at_ls")


def get_config(arg=None):
  if arg not in (None, "", "wrn"):
    raise ValueError(f"unknown study variant {arg!r}: use nothing or wrn")
  s = ml_collections.ConfigDict()
  s.config = "configs/cifar10.py"
  s.methods = ("standard", "entm", "ls", "at", "at_entm", "at_ls")
  s.seeds = ml_collections.ConfigDict(
      {m: (0, 1, 2) if m in ADVERSARIAL else (0, 1) for m in s.methods})
  s.baseline = "at"
  s.standard_baseline = "standard"
  s.overrides = ml_collections.ConfigDict(
      {"model": {"name": "wide_resnet" if arg == "wrn" else "preact_resnet18"}})
  s.method_overrides = ml_collections.ConfigDict({
      m: {"best_checkpoint": {"metric": "eval/clean_accuracy"}}
      for m in ("standard", "entm", "ls")})
  s.sweep = ml_collections.ConfigDict({
      "entm": ("regularizer.beta", (0.3, 1.0, 2.0)),
      "ls": ("regularizer.alpha", (0.2, 0.5, 0.8)),
      "at_entm": ("regularizer.beta", (0.1, 0.3, 1.0)),
      "at_ls": ("regularizer.alpha", (0.1, 0.2, 0.5)),
  })
  s.ablation = ml_collections.ConfigDict({
      "method": "at_entm", "seeds": (0,),
      "variants": {"on_clean": {"regularizer": {"on": "clean"}},
                   "on_both": {"regularizer": {"on": "both"}},
                   "attack_objective": {"attack": {"loss": "objective"}}},
  })
  grid = tuple(e / 255 for e in (2, 4, 8, 12, 16))

  def output(preset, checkpoint, eps, checks=False):
    spec = {"preset": preset, "checkpoint": checkpoint, "eps": eps, "num_examples": 2000,
            "batch_size": 500, "checks": checks}
    if preset == "strong":
      spec["only_robust"] = True
    return spec

  s.evals = ml_collections.ConfigDict({
      "paper": output("paper", "best", grid, checks=True),
      "strong": output("strong", "best", grid),
      "paper_last": output("paper", "last", (8 / 255, 16 / 255)),
      "strong_last": output("strong", "last", (8 / 255, 16 / 255)),
  })
  s.ablation_evals = ml_collections.ConfigDict({
      "paper": output("paper", "best", (8 / 255, 16 / 255)),
      "strong": output("strong", "best", (8 / 255, 16 / 255)),
  })
  s.jacobian = ml_collections.ConfigDict({
      "methods": ADVERSARIAL, "num_examples": 500, "outputs": ("logits", "probs"),
      "norms": ("fro", "spectral"), "power_iters": 50, "temperature_examples": 1000,
  })
  return s
