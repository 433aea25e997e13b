r"""The paper's study at CPU scale on the embedded Fashion-MNIST (full 60k / 10k splits).

  python -m uat_jax.study --study=configs/fashion_mnist_study.py --root=workdirs/study
  launch/reproduce.sh [--quick]        # the same, then the report in results/fashion_mnist/

Recipe: small CNN (0.2M parameters), Adam 1e-3, batch 128, 8 epochs (3,750 steps); AT with
L-inf eps 0.1, 10 PGD steps of eps/4 with a random start; "large" eps = 2 x 0.1 = 0.2 (the
analogue of 16/255 for 8/255 AT). Methods standard, entm, ls, at, at_entm, at_ls, seeds 0 and 1.
beta (EntM) and alpha (LS) are chosen by a sweep on 5,000 training examples held out as a
validation split (never the test split), at 3 epochs, by PGD-20 accuracy at the training eps.
Evaluation on the first 2,000 test images with the `paper` preset on the eps grid (0.05, 0.1,
0.15, 0.2, 0.3) and the `strong` (AutoAttack) preset at (0.1, 0.2); transfer attacks from the
same method's other seed; Jacobian norms on 500 test images against AT (seed 0).

Budget on 2 CPU cores, measured in the first full run (2026-11-24): the sweep 38 min (12 runs
of 1,400 steps); each standard / EntM / LS run ~3 min, each AT / AT+EntM / AT+LS run ~14 min
(3,750 PGD-10 steps at ~0.17 s, plus evaluation every 750 steps and Jacobian tracking): sweep
and training ~2.3 hours. Evaluation ~7 min per standard / EntM / LS model (paper preset ~5 min,
strong ~2 min) and ~20 min per AT-row model (paper ~5.5 min, strong ~14 min: APGD and
Square-5000 on the ~75% of points still robust): ~2.7 hours. Jacobians ~5 min. About 5-5.5
hours in all.

`:quick` runs the same pipeline on a tiny budget (a few minutes; CI runs it): 30 training steps,
one seed, a 2-value sweep of AT+EntM's beta only, 50 test images, eps (0.1, 0.2), the strong
preset's attacks shortened.
"""

import ml_collections


def get_config(arg=None):
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"unknown study variant {arg!r}: use nothing or quick")
  s = ml_collections.ConfigDict()
  s.config = "configs/fashion_mnist.py"  # the training config every run starts from
  s.methods = ("standard", "entm", "ls", "at", "at_entm", "at_ls")
  s.seeds = (0,) if quick else (0, 1)
  s.baseline = "at"  # Jacobian ratios and the claims compare against this method
  # Overrides for every run, shaped like the training config.
  s.overrides = ml_collections.ConfigDict({
      "model": {"name": "small_cnn"},
      "num_train_steps": 30 if quick else 3750,
      "log_every_steps": 10 if quick else 125,
      "checkpoint_every_steps": 15 if quick else 500,
      "evals": {"pgd": {"every_steps": 30 if quick else 750,
                        "num_examples": 100 if quick else 2000},
                "jacobian": {"every_steps": 30 if quick else 750,
                             "num_examples": 16 if quick else 128,
                             "power_iters": 5 if quick else 50}},
  })
  # Sweeps on the validation split: method -> (config key, values); one value: no sweep run.
  s.sweep = ml_collections.ConfigDict({
      "entm": ("regularizer.beta", (1.0,) if quick else (0.3, 1.0, 2.0)),
      "ls": ("regularizer.alpha", (0.5,) if quick else (0.2, 0.5, 0.8)),
      "at_entm": ("regularizer.beta", (0.3, 1.0) if quick else (0.1, 0.3, 1.0)),
      "at_ls": ("regularizer.alpha", (0.2,) if quick else (0.1, 0.2, 0.5)),
  })
  s.sweep_overrides = ml_collections.ConfigDict({
      "data": {"validation_size": 1000 if quick else 5000},
      "num_train_steps": 10 if quick else 1400,
      "evals": {"pgd": {"every_steps": 10 if quick else 1400,
                        "num_examples": 100 if quick else 5000},
                "jacobian": {"every_steps": 0}},
  })
  # Evaluation: output name -> overrides of config.evals.suite, and `attacks` run after the
  # preset's (in the order of their names, as config.evals.suite.attacks runs them). Quick:
  # the strong preset's attacks shortened, under its names (so the report reads the same;
  # FAB-T left out).
  s.evals = ml_collections.ConfigDict({
      "paper": {"preset": "paper", "eps": (0.1, 0.2) if quick else (0.05, 0.1, 0.15, 0.2, 0.3),
                "num_examples": 50 if quick else 2000},
      "strong": {"preset": "" if quick else "strong", "eps": (0.1, 0.2),
                 "num_examples": 50 if quick else 2000, "only_robust": True,
                 "attacks": {
                     "APGD-CE": {"attack": "apgd", "steps": 10},
                     "APGD-T": {"attack": "apgd_t", "steps": 10, "num_targets": 3},
                     "Square-5000": {"attack": "square", "queries": 100},
                 } if quick else {}},
  })
  s.jacobian = ml_collections.ConfigDict({"num_examples": 16 if quick else 500,
                                          "power_iters": 5 if quick else 50})
  return s
