"""Adversarial attacks on any JAX classifier given as `logits_fn(x) -> logits`.

Images are float32 NHWC in [0, 1] and eps is on that scale; `logits_fn` is any JAX function
of them (batch norm in inference mode), e.g. `attacks.pgd(logits_fn, x, y, eps=8/255)`: the key
defaults to PRNGKey(0) and PGD's step size to eps/4 (10 steps), as the presets use. Attacks are
pure, jittable and deterministic in their key; their output always lies in the eps-ball around
x (L-inf unless a `norm="l2"` is chosen) and in [0, 1]. White-box: fgsm, pgd (shared with
adversarial training), apgd, apgd_targeted, fab_targeted (FAB-T, minimal distortion). Black-box:
square (score-based), spsa (gradient-free estimate), transfer (PGD on a surrogate). Losses: ce, cw (margin), dlr,
targeted DLR, temperature_scaled(loss, T), or any `loss(logits, labels) -> [B]` to maximize.

Families, one module each: common (losses, checks, projections), gradient (FGSM, PGD, transfer),
auto_pgd (APGD, APGD-T), boundary (FAB-T), random_search (Square), finite_difference (SPSA).
"""

from uat_jax.attacks.auto_pgd import apgd, apgd_checkpoints, apgd_targeted
from uat_jax.attacks.common import (LOSSES, NORMS, PROJECTIONS, LogitsFn, PerExampleLoss,
                                    ascent_direction, check_eps, check_inputs, dlr_loss,
                                    margin_loss, project_l2, project_linf, resolve_loss,
                                    resolve_unroll, targeted_dlr_loss, temperature_scaled,
                                    uniform_start, default_key)
from uat_jax.attacks.boundary import fab_minimal, fab_targeted
from uat_jax.attacks.gradient import fgsm, pgd, transfer
from uat_jax.attacks.finite_difference import spsa
from uat_jax.attacks.random_search import square, square_start, square_steps

__all__ = ["LOSSES", "NORMS", "PROJECTIONS", "LogitsFn", "PerExampleLoss", "apgd",
           "apgd_checkpoints", "apgd_targeted", "ascent_direction", "check_eps", "check_inputs",
           "default_key",
           "dlr_loss", "fab_minimal", "fab_targeted", "fgsm", "margin_loss", "pgd", "project_l2",
           "project_linf", "resolve_loss", "resolve_unroll", "spsa", "square", "square_start",
           "square_steps", "targeted_dlr_loss", "temperature_scaled", "transfer",
           "uniform_start"]
