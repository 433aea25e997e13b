"""The candidate training regimes of version 3 of the Fashion-MNIST study's plan (v3.4, a
regime where AT overfits), shared by the pilot that tests them (uat_jax.study.pilot) and the
study that runs in the chosen one (fashion_mnist_overfit_study, v3.5)."""

from uat_jax.errors import UatError

# candidate -> (model, training images, training steps of batch 128, training eps), in order of
# cost; steps are multiples of 20 so that validation runs every 5% of training and at the end.
CANDIDATES = {"P1": ("small_cnn", 2000, 3120, 0.1), "P2": ("small_cnn", 1000, 3120, 0.1),
              "P3": ("small_cnn", 5000, 7800, 0.15), "P4": ("madry_cnn", 5000, 7800, 0.1)}
EVALUATIONS = 20  # validation passes per run: every 5% of training
VALIDATION = 5000  # held-out validation images


def check(candidate) -> None:
  if candidate not in CANDIDATES:
    raise UatError(f"unknown regime {candidate!r}: name the pilot's candidate, one of "
                     f"{', '.join(CANDIDATES)} (e.g. fashion_mnist_overfit_study:P4)")


def validation_every(candidate: str) -> int:
  """Steps between the candidate's validation passes (and checkpoints): 5% of training."""
  check(candidate)
  return CANDIDATES[candidate][2] // EVALUATIONS


def overrides(candidate: str) -> dict:
  """The candidate's training settings over the fashion_mnist recipe: its model, training
  images, steps and eps; PGD-10 of step eps / 4; SGD 0.05 with momentum 0.9 and weight decay
  5e-4, divided by 10 at 50% and 75%; 5,000 held-out validation images; logs four times and a
  checkpoint once per validation period."""
  model, train_size, steps, eps = CANDIDATES[candidate]
  every = validation_every(candidate)
  return {
      "model": {"name": model},
      "data": {"validation_size": VALIDATION, "train_size": train_size},
      "num_train_steps": steps, "batch_size": 128,
      "attack": {"eps": eps, "step_size": eps / 4, "steps": 10},
      "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9,
                    "weight_decay": 5e-4, "schedule": "piecewise", "boundaries": (0.5, 0.75)},
      "log_every_steps": every // 4, "checkpoint_every_steps": every,
      "evals": {"pgd": {"every_steps": 0}},
  }
