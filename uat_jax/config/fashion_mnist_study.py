r"""The paper's study at CPU scale on the embedded Fashion-MNIST (docs/study_plan.md).

  python -m uat_jax.study --study=fashion_mnist_study --root=workdirs/study
  launch/reproduce.sh [--quick]        # the same, then the report in results/fashion_mnist/

Regime (the plan's pilot chose R2): small CNN (0.21M parameters), batch 128, 5,000 training
images (`data.train_size`) and 5,000 held-out validation images, 80 epochs (3,125 steps), SGD
0.05 with momentum 0.9 and weight decay 5e-4, divided by 10 at 50% and 75% of training; AT with
L-inf eps 0.1, PGD-10 of step 0.025 with a random start. After every epoch PGD-20 on the first
1,000 validation images; the best checkpoint is kept by validation PGD-20 accuracy
(adversarially trained methods) or clean validation accuracy (the others).

Runs: a sweep of beta (EntM) / alpha (LS) per regularized method at the method's first seed with
the final schedule (the sweep run of the chosen value is that seed's final run; a finished
sweep's choice is reused through `sweep_from`); AT, AT+EntM, AT+LS with seeds 0-4, standard,
EntM, LS with seeds 0-2; an ablation of AT+EntM
(`regularizer.on` clean / both, `attack.loss=objective`) with seeds 0-1. Evaluation on the first
2,000 test images with the `paper` and `strong` presets: the best checkpoint on the eps grid
(0.05, 0.1, 0.15, 0.2, 0.3; from 0.1 for the adversarially trained methods), the last
checkpoint at eps 0.2, the ablation runs at eps 0.1 and 0.2; transfer attacks from the same
method's next seed. Jacobian norms of the adversarially trained
methods' best checkpoints on 500 test images, with the temperature-matched AT control.

Budget on 2 CPU cores (measured in the pilot, 2026-11-25): ~16 minutes per adversarially trained
run (3,125 PGD-10 steps and 80 validation PGD-20 passes), ~4 per standard / EntM / LS run.

`:quick` runs the same pipeline on a tiny budget (CI runs it): standard, EntM, AT and AT+EntM
(LS and AT+LS run the same code with another regularizer), 30 training steps of batch 64, one
seed per method (two for AT, so that transfer attacks and the seed bootstrap run), a 2-value
sweep of EntM's beta, one ablation variant, 50 test images, eps (0.1, 0.2), both presets'
attacks shortened (under their names).
"""

import ml_collections

from uat_jax.errors import UatError

ADVERSARIAL = ("at", "at_entm", "at_ls")


def get_config(arg=None):
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise UatError(f"unknown study variant {arg!r}: use nothing or quick")
  s = ml_collections.ConfigDict()
  s.config = "fashion_mnist"  # the recipe (or config file) every run starts from
  s.methods = (("standard", "entm", "at", "at_entm") if quick else
               ("standard", "entm", "ls", "at", "at_entm", "at_ls"))
  # Seeds per method; the first seed also runs the sweep.
  s.seeds = ml_collections.ConfigDict({
      m: ((0, 1) if m == "at" else (0,)) if quick else
      ((0, 1, 2, 3, 4) if m in ADVERSARIAL else (0, 1, 2)) for m in s.methods})
  s.baseline = "at"  # claims 1-3 and 5 compare the AT methods with it; 4 and 5 with standard
  s.standard_baseline = "standard"
  steps_per_epoch = 39  # 5,000 / 128
  # Overrides for every run, shaped like the training config.
  s.overrides = ml_collections.ConfigDict({
      "model": {"name": "small_cnn"},
      "data": {"validation_size": 1000 if quick else 5000,
               "train_size": 2000 if quick else 5000},
      "num_epochs": 80.0,
      "num_train_steps": 30 if quick else -1,
      **({"batch_size": 64} if quick else {}),
      "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9,
                    "weight_decay": 5e-4, "schedule": "piecewise"},
      "log_every_steps": 10 if quick else steps_per_epoch,
      "checkpoint_every_steps": 15 if quick else 5 * steps_per_epoch,
      "evals": {"pgd": {"every_steps": 10 if quick else steps_per_epoch,
                        "num_examples": 100 if quick else 1000,
                        "batch_size": 100 if quick else 500}},
      "best_checkpoint": {"metric": "eval/pgd_accuracy"},
  })
  # Per-method overrides (after s.overrides): the methods that are not adversarially trained
  # keep their best checkpoint by clean validation accuracy.
  s.method_overrides = ml_collections.ConfigDict({
      m: {"best_checkpoint": {"metric": "eval/clean_accuracy"}}
      for m in ("standard", "entm", "ls")})
  # Sweeps at the method's first seed, scored by the best value of the run's best_checkpoint
  # metric on the validation split (ties: the smaller value). One value: nothing is swept.
  # The committed sweep (every value trained, scored on the validation split): its choice is
  # taken as it stands, and its runs are not retrained (docs/study_plan.md). Set
  # --study.sweep_from='' to run the sweep again.
  s.sweep_from = "" if quick else "results/fashion_mnist/sweep_2026-11-25.json"
  # The report's section on the v3 pilot (plan v3.4), read from OUT/data/pilot_v3.json.
  s.pilot_v3 = not quick
  s.sweep = ml_collections.ConfigDict({
      "entm": ("regularizer.beta", (0.3, 1.0) if quick else (0.3, 1.0, 2.0)),
      "ls": ("regularizer.alpha", (0.5,) if quick else (0.2, 0.5, 0.8)),
      "at_entm": ("regularizer.beta", (0.3,) if quick else (0.1, 0.3, 1.0)),
      "at_ls": ("regularizer.alpha", (0.2,) if quick else (0.1, 0.2, 0.5)),
  })
  # The ablation: variants of one method (with its chosen value), shaped like the config.
  s.ablation = ml_collections.ConfigDict({
      "method": "at_entm",
      "seeds": (0,) if quick else (0, 1),
      "variants": ({"on_clean": {"regularizer": {"on": "clean"}}} if quick else {
          "on_clean": {"regularizer": {"on": "clean"}},
          "on_both": {"regularizer": {"on": "both"}},
          "attack_objective": {"attack": {"loss": "objective"}},
      }),
  })
  grid = (0.1, 0.2) if quick else (0.05, 0.1, 0.15, 0.2, 0.3)
  n = 50 if quick else 2000
  # Quick: the presets' attacks shortened, under their names (the strong one without FAB-T).
  quick_attacks = {
      "paper": {"FGSM": {"attack": "fgsm"}, "PGD-20": {"attack": "pgd", "steps": 20},
                "PGD-100": {"attack": "pgd", "steps": 20},
                "CW-100": {"attack": "pgd", "steps": 20, "loss": "cw"},
                "Transfer-PGD-20": {"attack": "transfer", "steps": 10}},
      "strong": {"APGD-CE": {"attack": "apgd", "steps": 10},
                 "APGD-T": {"attack": "apgd_t", "steps": 10, "num_targets": 3},
                 "Square-5000": {"attack": "square", "queries": 100}},
  }

  def output(preset, checkpoint, eps, checks=False, eps_by_method=None, deferred=False,
             seeds=(), worst_case=True):
    spec = {"preset": preset, "checkpoint": checkpoint, "eps": eps, "num_examples": n,
            "batch_size": n if quick else 500, "checks": checks,
            "eps_by_method": eps_by_method or {}, "deferred": deferred, "seeds": seeds,
            "worst_case": worst_case}
    if preset in ("strong", "adaptive"):
      spec["only_robust"] = True
    if quick:
      spec.update(preset="", attacks=quick_attacks[preset])
    return spec

  # Evaluation outputs (W/eval/<name>/) of the final runs, in the order they run (`deferred`
  # ones after every other piece); `eps_by_method` replaces `eps` for some methods (empty: the
  # output is not run for them). The worst case at an eps is per example over every output of
  # one checkpoint that runs at that eps; `attacks` run after the preset's. The cost of
  # AutoAttack is per still-robust point, so it is high where the adversarially trained models
  # stay robust (eps 0.05-0.15) and low elsewhere: the primary outcome (eps 0.2) comes first,
  # the adversarially trained models' eps 0.1 and 0.15 last, and their eps 0.05 (below the
  # training eps, outside every claim) not at all (docs/study_plan.md). `seeds`: only for those
  # seeds; `worst_case` False: a check beside the verdicts' worst case, not part of it (the
  # convergence check of plan v3.3, `adaptive` on the best checkpoints of AT, AT+EntM and AT+LS,
  # seeds 0-1). Claim 4 compares the last checkpoints at the smallest eps (plan v3.2).
  standard_like = {m: grid for m in s.methods if m not in ADVERSARIAL}
  not_adversarial = {m: () for m in ADVERSARIAL if m in s.methods}
  v3 = {} if quick else {  # (the quick study's pipeline is the same without them)
      "paper_last_small": output("paper", "last", grid[:1], eps_by_method=not_adversarial),
      "strong_last_small": output("strong", "last", grid[:1], eps_by_method=not_adversarial),
      "adaptive_check": output("adaptive", "best", (0.2,),
                               eps_by_method={m: () for m in standard_like}, seeds=(0, 1),
                               worst_case=False),
      # At eps 0.1, where most points stay robust, without SPSA (plan v3.8: its 25,600 forward
      # passes per point and step cost hours per model on 2 CPU cores).
      "adaptive_check_gradient": {
          **output("adaptive", "best", (0.1,), eps_by_method={m: () for m in standard_like},
                   seeds=(0, 1), worst_case=False),
          "preset": "", "select": "cw100,pgd_sharp,pgd_objective,apgd_dlr"},
  }
  if quick:  # the same paths on a 2-eps grid
    s.evals = ml_collections.ConfigDict({
        "paper": output("paper", "best", grid, checks=True),
        "strong": output("strong", "best", (0.2,), eps_by_method=standard_like),
        # The standard-like methods' last checkpoints also at 0.1, the grid's smallest eps
        # (claim 4).
        "paper_last": output("paper", "last", (0.2,), eps_by_method=standard_like),
        "strong_grid": output("strong", "best", (0.1,), deferred=True,
                              eps_by_method={m: () for m in standard_like}),
    })
    s.ablation_evals = ml_collections.ConfigDict({"paper": output("paper", "best", grid)})
  else:
    s.evals = ml_collections.ConfigDict({
        "paper": output("paper", "best", grid, checks=True,  # the masking checks, once a run
                        eps_by_method={m: grid[1:] for m in ADVERSARIAL}),
        "strong": output("strong", "best", (0.2, 0.3), eps_by_method=standard_like),
        "paper_last": output("paper", "last", (0.2,)),
        "strong_last": output("strong", "last", (0.2,)),
        "strong_grid": output("strong", "best", (0.1, 0.15), deferred=True,
                              eps_by_method={m: () for m in standard_like}),
        **v3,
    })
    s.ablation_evals = ml_collections.ConfigDict({
        "paper": output("paper", "best", (0.1, 0.2)),
        "strong": output("strong", "best", (0.2,)),
        "strong_grid": output("strong", "best", (0.1,), deferred=True),
    })
  # Jacobians of the best checkpoints of these methods' final runs; the temperature control
  # matches AT's mean predictive entropy on the validation images to each regularized method's.
  s.jacobian = ml_collections.ConfigDict({
      "methods": ("at", "at_entm") if quick else ADVERSARIAL,
      "num_examples": 16 if quick else 500,
      "outputs": ("logits", "probs"),
      "norms": ("fro", "spectral"),
      "power_iters": 5 if quick else 50,
      "temperature_examples": 100 if quick else 1000,
  })
  return s
