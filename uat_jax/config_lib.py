"""Shared pieces of the configs in configs/: the base recipe, methods, runlocal, validation.

A config file does `return config_lib.build(arg, dataset_defaults)`; `arg` is the part after the
colon in `--config=configs/cifar10.py:at_entm,runlocal`: a method name, then optional variants.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import jax
import ml_collections

from uat_jax import attacks, data, evaluate, fashion_mnist, jacobian, losses, models
from uat_jax.errors import UatError

# Defaults for beta (EntM) and alpha (LS) per method. The paper does not give its values
# (docs/paper.md); these are in the middle of the sweep it suggests (beta in {0.1, 0.3, 1, 2},
# alpha in {0.1, 0.2, 0.5, 0.8}, large alpha for LS alone). Override with --config.regularizer.*.
METHOD_DEFAULTS = {
    "standard": {},
    "entm": {"beta": 1.0},
    "ls": {"alpha": 0.5},
    "at": {},
    "at_entm": {"beta": 0.3},
    "at_ls": {"alpha": 0.2},
}
VARIANTS = ("runlocal",)
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "piecewise", "cosine")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "at_entm"
  c.seed = 0  # initialization, data order, augmentation and attack keys, in [0, 2**32)

  c.data = ml_collections.ConfigDict()
  c.data.name = "fashion_mnist"
  c.data.data_dir = ""  # TFDS data dir; "" = TFDS default (~/tensorflow_datasets or TFDS_DATA_DIR)
  # Fashion-MNIST only: local IDX files (Debian's dataset-fashion-mnist); "" = TFDS download.
  c.data.manual_dir = fashion_mnist.DEFAULT_DIR
  c.data.download = True  # let TFDS download datasets that are not prepared yet
  c.data.augment = "default"  # default (per dataset) | none | crop | crop_flip
  # > 0: hold out this many train examples (a fixed random subset) and evaluate on them instead
  # of the test split (hyper-parameter sweeps; the test split is then never read).
  c.data.validation_size = 0
  # > 0: train on a fixed random subset of this many of the remaining train examples (the same
  # for every seed and method; a data-limited regime, where robust overfitting comes sooner).
  c.data.train_size = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "madry_cnn"
  c.model.normalize = True  # per-dataset mean/std inside the model
  c.model.depth = 34  # wide_resnet only
  c.model.width = 10  # wide_resnet only (widening factor)

  c.batch_size = 128  # global, over all devices
  # jit: one program over the ('data',) device mesh (default); pmap: jax.pmap over the same
  # devices with gradients averaged by pmean (same updates to float tolerance, tested).
  c.parallelism = "jit"
  # Training computation dtype: float32, or bfloat16 (mixed precision: float32 parameters,
  # optimizer and loss; for accelerators, slow on CPU), or float64 (numerical checks; needs
  # JAX_ENABLE_X64=1). Evaluation, attacks outside training and Jacobians compute in float32
  # (float64 with dtype float64).
  c.dtype = "float32"
  c.num_epochs = 20.0
  c.num_train_steps = -1  # > 0: train that many steps; <= 0: num_epochs decides

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9  # sgd
  c.optimizer.nesterov = False  # sgd
  c.optimizer.weight_decay = 0.0  # L2 added to the gradient (PyTorch-style), all parameters
  c.optimizer.schedule = "constant"
  c.optimizer.boundaries = (0.5, 0.75)  # piecewise: fractions of training
  c.optimizer.decay_factor = 0.1  # piecewise
  c.optimizer.warmup_steps = 0

  # Adversarial training (methods at, at_entm, at_ls): L-inf PGD with random start.
  c.attack = ml_collections.ConfigDict()
  c.attack.eps = 0.1  # L-inf radius of the training attack, on the [0, 1] pixel scale
  c.attack.step_size = 0.025  # PGD step (signed gradient), same scale
  c.attack.steps = 10  # PGD steps per training batch (AT methods)
  c.attack.random_start = True  # uniform start in the eps-ball
  c.attack.loss = "ce"  # ce | objective (the method's regularized loss)
  c.attack.bn_mode = "train"  # train: batch statistics, updates discarded | eval: running stats
  c.attack.unroll = -1  # -1: auto (rolled: flat compile time, as fast as unrolled); n or True

  c.regularizer = ml_collections.ConfigDict()
  c.regularizer.beta = 0.3  # EntM weight: CE - beta * H
  c.regularizer.alpha = 0.2  # LS: targets (1 - alpha) onehot + alpha / K
  c.regularizer.on = "adversarial"  # adversarial | clean | both (under AT)

  # Evaluators: each reads the evaluation split (the test split, or the held-out validation
  # examples when data.validation_size > 0) and runs during training every `every_steps` steps
  # and after the last one (0: not during training); --mode=evaluate runs those named in
  # evals.on_evaluate on a checkpoint. Their scalars go to metrics.jsonl and TensorBoard.
  c.evals = ml_collections.ConfigDict()
  c.evals.on_evaluate = ("suite",)  # evaluators --mode=evaluate runs: pgd, suite, jacobian
  c.evals.checkpoint = "last"  # --mode=evaluate / jacobian: last | best | a step number
  # The split --mode=evaluate / jacobian read: test | validation (the data.validation_size
  # held-out train examples). During training the evaluators read the validation examples when
  # data.validation_size > 0 (model selection), else the test split.
  c.evals.split = "test"
  # Where --mode=evaluate / jacobian write: "" = into the workdir (W/eval/<output>/,
  # W/jacobian/); a directory = there instead (DIR/eval/<output>/, DIR/jacobian/<workdir name>/),
  # e.g. for a read-only or shared model directory.
  c.evals.output_dir = ""

  # pgd: clean accuracy, PGD accuracy at the training eps (attack.eps) and mean predictive
  # entropy, logged as eval/clean_accuracy, eval/pgd_accuracy, eval/mean_entropy.
  c.evals.pgd = ml_collections.ConfigDict()
  c.evals.pgd.every_steps = 1000  # 0 = not during training
  c.evals.pgd.num_examples = 0  # 0 = the whole split
  c.evals.pgd.batch_size = 500  # rounded up to a multiple of the device count
  c.evals.pgd.steps = 20
  c.evals.pgd.step_size = 0.025

  # suite: the attack suite (uat_jax/evaluate/) over an eps grid with gradient-masking checks;
  # --mode=evaluate writes its reports to <workdir>/eval/<output>/.
  c.evals.suite = ml_collections.ConfigDict()
  c.evals.suite.every_steps = 0  # 0 = not during training (--mode=evaluate only)
  c.evals.suite.preset = "quick"  # quick | paper | strong | adaptive | "" (only the ones below)
  # Attacks by name, after the preset's: a comma-separated list of uat_jax.evaluate.NAMED, e.g.
  # --config.evals.suite.preset= --config.evals.suite.select=apgd_ce,apgd_dlr
  c.evals.suite.select = ""
  c.evals.suite.eps = ()  # L-inf eps grid on the [0, 1] scale; () = the dataset's default grid
  c.evals.suite.num_examples = 0  # first N examples; 0 = the whole split
  c.evals.suite.batch_size = 500  # rounded up to a multiple of the device count
  c.evals.suite.seed = 0
  # Each attack only on the points every earlier one failed on (AutoAttack); None = the preset's
  # choice (True for strong).
  c.evals.suite.only_robust = ml_collections.config_dict.placeholder(bool)
  c.evals.suite.checks = True  # gradient-masking checks (a few extra attack runs)
  c.evals.suite.surrogate_workdir = ""  # another workdir: the surrogate of transfer attacks
  c.evals.suite.output = ""  # results go to <workdir>/eval/<output>
  # Extra attacks run after the preset's, by name, e.g. in a config file:
  #   c.evals.suite.attacks.pgd200 = ml_collections.ConfigDict(dict(attack="pgd", steps=200))
  # (parameters per attack: uat_jax.evaluate.ATTACKS).
  c.evals.suite.attacks = ml_collections.ConfigDict()

  # jacobian: input-Jacobian norms. During training and in --mode=evaluate: mean norms on the
  # first num_examples clean points, logged as jacobian/<output>/<norm> and jacobian/loss_grad.
  # --mode=jacobian compares workdirs on the same points (and on PGD points, `adversarial`).
  c.evals.jacobian = ml_collections.ConfigDict()
  c.evals.jacobian.every_steps = 0  # 0 = not during training
  c.evals.jacobian.num_examples = 1000  # first N examples; 0 = the whole split
  c.evals.jacobian.chunk_size = 64  # examples per compiled chunk (bounds memory)
  c.evals.jacobian.outputs = ("logits", "probs")  # logits | probs | log_probs
  c.evals.jacobian.norms = ("fro", "spectral", "inf")
  c.evals.jacobian.power_iters = 50  # spectral norm: power iterations on J^T J
  # --mode=jacobian: also on PGD points (attack.eps, evals.pgd.steps / step_size)
  c.evals.jacobian.adversarial = True
  c.evals.jacobian.baseline = ""  # --mode=jacobian: the workdir the others are compared with
  c.evals.jacobian.seed = 0

  c.log_every_steps = 100  # train/* metrics (means over the period)
  c.checkpoint_every_steps = 1000  # also after the last step and on SIGTERM
  c.max_checkpoints = 3  # the newest ones, in W/checkpoints (resuming)
  # Best-checkpoint selection (early stopping against robust overfitting, as Rice et al. 2020):
  # at every evaluation that logs `metric` (e.g. "eval/pgd_accuracy" of the pgd evaluator, on
  # the validation split: it needs data.validation_size > 0), the state is kept in
  # W/checkpoints_best if it is the best so far; "" = off. Evaluate it with
  # --config.evals.checkpoint=best or uat_jax.load(W, step="best").
  c.best_checkpoint = ml_collections.ConfigDict()
  c.best_checkpoint.metric = ""  # e.g. eval/pgd_accuracy; "" = no best checkpoint
  c.best_checkpoint.mode = "max"  # max | min
  return c


def runlocal(c: ml_collections.ConfigDict) -> None:
  """A budget that finishes in minutes on 2 CPU cores: small CNN, a few hundred steps, and an
  evaluation on 500 test examples."""
  c.model.name = "small_cnn"
  c.evals.suite.num_examples = 500
  c.evals.jacobian.num_examples = 200
  c.num_train_steps = 300
  c.evals.pgd.every_steps = 100
  c.evals.pgd.num_examples = 1000
  c.log_every_steps = 50
  c.checkpoint_every_steps = 100


def resnet_at_recipe(c: ml_collections.ConfigDict, dataset: str, learning_rate: float,
                     num_epochs: float) -> None:
  """The Rice et al. 2020 PGD-AT recipe for 32x32 datasets: PreAct ResNet-18, eps 8/255 with
  10 steps of 2/255, SGD momentum 0.9, weight decay 5e-4, batch 128, piecewise decay at 50%/75%,
  early stopping on 1,000 held-out training images (PGD-20 every epoch, best checkpoint kept)."""
  c.data.name = dataset
  c.model.name = "preact_resnet18"
  c.num_epochs = num_epochs
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = learning_rate
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.schedule = "piecewise"
  c.attack.eps = 8 / 255
  c.attack.step_size = 2 / 255
  c.attack.steps = 10
  c.evals.pgd.step_size = 2 / 255
  c.evals.pgd.batch_size = 250
  early_stopping(c, validation_size=1000, num_train=data.get_spec(dataset).num_train)


def early_stopping(c: ml_collections.ConfigDict, validation_size: int, num_train: int) -> None:
  """Rice et al.'s early stopping: hold out `validation_size` training images, run the PGD
  evaluator on them once an epoch, and keep the best checkpoint by its robust accuracy."""
  c.data.validation_size = validation_size
  c.evals.pgd.every_steps = math.ceil((num_train - validation_size) / c.batch_size)  # one epoch
  c.evals.pgd.num_examples = validation_size
  c.best_checkpoint.metric = "eval/pgd_accuracy"


def accelerator_study(config: str, eps_grid: tuple[float, ...], large_eps: float,
                      overrides: dict | None = None) -> ml_collections.ConfigDict:
  """A study config (python -m uat_jax.study) for a dataset's training config, with the design of
  configs/fashion_mnist_study.py at accelerator scale: beta (EntM) / alpha (LS) swept on the
  validation split at seed 0 with the final schedule; AT, AT+EntM and AT+LS with seeds 0-2,
  standard, EntM and LS with seeds 0-1; the AT+EntM ablation (regularizer on clean / both, the
  attack on the regularized objective) with seed 0. Evaluation on the first 2,000 test images
  with the paper and strong presets over `eps_grid` (best checkpoint) and at the training eps and
  `large_eps` (last checkpoint, ablation); Jacobians of the adversarially trained runs on 500
  test images. The best checkpoint is kept by validation PGD accuracy (adversarially trained
  methods; the training config must hold out validation images) or clean accuracy (the others).
  `overrides` (shaped like the training config) apply to every run."""
  adversarial = ("at", "at_entm", "at_ls")
  train_eps = from_file(config, "at").attack.eps
  s = ml_collections.ConfigDict()
  s.config = config
  s.methods = ("standard", "entm", "ls") + adversarial
  s.seeds = ml_collections.ConfigDict(
      {m: (0, 1, 2) if m in adversarial else (0, 1) for m in s.methods})
  s.baseline = "at"
  s.standard_baseline = "standard"
  s.large_eps = large_eps  # the large eps of claims 1 and 5 (the report's primary outcome)
  s.overrides = ml_collections.ConfigDict(overrides or {})
  s.method_overrides = ml_collections.ConfigDict({
      m: {"best_checkpoint": {"metric": "eval/clean_accuracy"}}
      for m in ("standard", "entm", "ls")})
  s.sweep_from = ""  # or the sweep.json of a finished sweep: its choice, no sweep runs
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

  def output(preset, checkpoint, eps, checks=False):
    spec = {"preset": preset, "checkpoint": checkpoint, "eps": tuple(eps), "num_examples": 2000,
            "batch_size": 500, "checks": checks}
    if preset == "strong":
      spec["only_robust"] = True
    return spec

  pair = (train_eps, large_eps)
  s.evals = ml_collections.ConfigDict({
      "paper": output("paper", "best", eps_grid, checks=True),
      "strong": output("strong", "best", eps_grid),
      "paper_last": output("paper", "last", pair),
      "strong_last": output("strong", "last", pair),
  })
  s.ablation_evals = ml_collections.ConfigDict({
      "paper": output("paper", "best", pair),
      "strong": output("strong", "best", pair),
  })
  s.jacobian = ml_collections.ConfigDict({
      "methods": adversarial, "num_examples": 500, "outputs": ("logits", "probs"),
      "norms": ("fro", "spectral"), "power_iters": 50, "temperature_examples": 1000,
  })
  return s


def parse_arg(arg: str | None) -> tuple[str, tuple[str, ...]]:
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  method = parts[0] if parts else "at_entm"
  losses.method_parts(method)
  for v in parts[1:]:
    if v not in VARIANTS:
      raise UatError(f"unknown config variant {v!r}: choose from {VARIANTS} "
                     "(e.g. --config=configs/fashion_mnist.py:at_entm,runlocal)")
  return method, tuple(parts[1:])


def build(arg: str | None, dataset_overrides, runlocal_overrides=None) -> ml_collections.ConfigDict:
  """Base config <- dataset recipe <- method <- variants. Returns a locked ConfigDict."""
  method, variants = parse_arg(arg)
  c = base_config()
  dataset_overrides(c)
  c.method = method
  for k, v in METHOD_DEFAULTS[method].items():
    c.regularizer[k] = v
  if "runlocal" in variants:
    runlocal(c)
    if runlocal_overrides:
      runlocal_overrides(c)
  c.lock()
  return c


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise UatError(message)


def _check_finite(node, prefix: str = "") -> None:
  """Every number of the config is finite (nan and inf pass most range checks)."""
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      _check_finite(value, f"{prefix}{key}.")
    elif isinstance(value, (tuple, list)):
      for v in value:
        _require(not isinstance(v, float) or math.isfinite(v),
                 f"{prefix}{key}={tuple(value)} must hold finite numbers")
    elif isinstance(value, float):
      _require(math.isfinite(value), f"{prefix}{key}={value} must be a finite number")


def validate(c, num_devices: int = 1) -> None:
  """Checks values (types and key names are checked by the locked ConfigDict)."""
  _check_finite(c)
  adversarial, _ = losses.method_parts(c.method)
  _require(0 <= c.seed < 2 ** 32, f"seed={c.seed} must be in [0, 2**32) (--config.seed)")
  data.get_spec(c.data.name)
  _require(c.model.name in models.MODELS,
           f"unknown model {c.model.name!r}: choose one of {sorted(models.MODELS)} "
           "(--config.model.name)")
  _require(c.data.validation_size >= 0,
           f"data.validation_size={c.data.validation_size} must be >= 0 (0: evaluate on test)")
  _require(c.data.train_size >= 0,
           f"data.train_size={c.data.train_size} must be >= 0 (0: every training example)")
  _require(c.data.augment in ("default", "none", "crop", "crop_flip"),
           f"unknown data.augment {c.data.augment!r}: choose default, none, crop or crop_flip")
  lower = max(num_devices, c.batch_size - c.batch_size % num_devices)
  _require(c.batch_size > 0 and c.batch_size % num_devices == 0,
           f"batch_size={c.batch_size} must be a positive multiple of the {num_devices} devices: "
           f"use {lower} or {lower + num_devices} (--config.batch_size={lower + num_devices})")
  _require(c.dtype in ("float32", "bfloat16", "float64"),
           f"unknown dtype {c.dtype!r}: choose float32, bfloat16 or float64 (--config.dtype)")
  _require(c.dtype != "float64" or jax.config.jax_enable_x64,
           "dtype=float64 needs 64-bit JAX: set the environment variable JAX_ENABLE_X64=1 "
           "(float64 compute is for numerical checks; float32 is the default)")
  _require(c.parallelism in ("jit", "pmap"),
           f"unknown parallelism {c.parallelism!r}: choose jit or pmap (--config.parallelism)")
  _require(c.num_train_steps > 0 or c.num_epochs > 0,
           "set a positive --config.num_train_steps or --config.num_epochs")
  _require(c.num_train_steps <= 0 or c.num_train_steps < 2 ** 31,
           f"num_train_steps={c.num_train_steps} must be below 2**31")
  attacks.check_eps(c.attack.eps)
  _require(c.attack.step_size >= 0 and math.isfinite(c.attack.step_size),
           f"attack.step_size={c.attack.step_size} must be >= 0")
  _require(not adversarial or c.attack.steps >= 1,
           f"attack.steps={c.attack.steps} must be >= 1 for method {c.method!r}")
  _require(c.attack.loss in ("ce", "objective"),
           f"unknown attack.loss {c.attack.loss!r}: choose ce or objective")
  _require(c.attack.bn_mode in ("train", "eval"),
           f"unknown attack.bn_mode {c.attack.bn_mode!r}: choose train or eval")
  u = c.attack.unroll
  _require(isinstance(u, bool) or u == -1 or u >= 1,
           f"attack.unroll={u} must be -1 (auto), a number of steps >= 1 or True (all)")
  _require(c.model.depth >= 10 and (c.model.depth - 4) % 6 == 0,
           f"model.depth={c.model.depth} must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...)")
  _require(c.model.width >= 1, f"model.width={c.model.width} must be >= 1")
  _require(c.regularizer.beta >= 0, f"regularizer.beta={c.regularizer.beta} must be >= 0")
  _require(0 <= c.regularizer.alpha < 1,
           f"regularizer.alpha={c.regularizer.alpha} must be in [0, 1)")
  _require(c.regularizer.on in losses.REGULARIZER_ON,
           f"unknown regularizer.on {c.regularizer.on!r}: choose one of {losses.REGULARIZER_ON}")
  o = c.optimizer
  _require(o.name in OPTIMIZERS, f"unknown optimizer {o.name!r}: choose one of {OPTIMIZERS}")
  _require(o.schedule in SCHEDULES,
           f"unknown optimizer.schedule {o.schedule!r}: choose one of {SCHEDULES}")
  _require(o.learning_rate > 0, f"optimizer.learning_rate={o.learning_rate} must be > 0")
  _require(o.weight_decay >= 0, f"optimizer.weight_decay={o.weight_decay} must be >= 0")
  _require(0 <= o.momentum < 1, f"optimizer.momentum={o.momentum} must be in [0, 1)")
  _require(o.decay_factor > 0, f"optimizer.decay_factor={o.decay_factor} must be > 0")
  _require(o.warmup_steps >= 0, f"optimizer.warmup_steps={o.warmup_steps} must be >= 0")
  _require(all(0 < b < 1 for b in o.boundaries),
           f"optimizer.boundaries={tuple(o.boundaries)} must be fractions of training in (0, 1)")
  for name in ("log_every_steps", "checkpoint_every_steps", "max_checkpoints"):
    _require(c[name] >= 1, f"{name}={c[name]} must be >= 1")
  validate_evals(c)
  validate_best_checkpoint(c)


def validate_best_checkpoint(c) -> None:
  b = c.best_checkpoint
  if not b.metric:
    return
  _require(b.mode in ("max", "min"),
           f"best_checkpoint.mode={b.mode!r}: choose max or min")
  prefixes = {"eval/": "pgd", "suite/": "suite", "jacobian/": "jacobian"}
  owner = next((name for p, name in prefixes.items() if b.metric.startswith(p)), None)
  _require(owner is not None,
           f"best_checkpoint.metric={b.metric!r} is no evaluator's scalar: use e.g. "
           "eval/pgd_accuracy (pgd), suite/worst_case@0.1 (suite) or jacobian/loss_grad")
  _require(c.evals[owner].every_steps > 0,
           f"best_checkpoint.metric={b.metric!r} comes from the {owner} evaluator, which does not "
           f"run during training: set --config.evals.{owner}.every_steps > 0")
  _require(c.data.validation_size > 0,
           "best_checkpoint selects on the evaluation split, which is the test split unless "
           "data.validation_size > 0: set --config.data.validation_size (e.g. 5000) so that the "
           "test split stays untouched")


def evaluated_step(c):
  """config.evals.checkpoint as classifier.load takes it: "last", "best" or an int step."""
  value = str(c.evals.checkpoint).strip()
  if value in ("last", "best"):
    return value
  try:
    return int(value)
  except ValueError:
    raise UatError(f"evals.checkpoint={value!r}: choose last, best or a step number "
                   "(--config.evals.checkpoint=best)") from None


EVALUATORS = ("pgd", "suite", "jacobian")


def validate_evals(c) -> None:
  """Checks config.evals: every evaluator's period, sizes and parameters."""
  e = c.evals
  for name in on_evaluate(c):
    _require(name in EVALUATORS, f"unknown evaluator {name!r} in evals.on_evaluate: choose from "
             f"{EVALUATORS} (--config.evals.on_evaluate=suite,jacobian)")
  for name in EVALUATORS:
    ev = e[name]
    _require(ev.every_steps >= 0,
             f"evals.{name}.every_steps={ev.every_steps} must be >= 0 (0 = not during training)")
    _require(ev.num_examples >= 0,
             f"evals.{name}.num_examples={ev.num_examples} must be >= 0 (0 = all)")
  for name in ("pgd", "suite"):
    _require(e[name].batch_size > 0, f"evals.{name}.batch_size={e[name].batch_size} must be > 0 "
             f"(--config.evals.{name}.batch_size)")
  _require(e.pgd.steps >= 0, f"evals.pgd.steps={e.pgd.steps} must be >= 0")
  for eps in e.suite.eps:
    attacks.check_eps(eps)
  evaluate.resolve_suite(suite_entries(c), e.suite.only_robust)
  j = e.jacobian
  for output in j.outputs:
    jacobian.check(output, j.norms)
  for name in ("chunk_size", "power_iters"):
    _require(j[name] >= 1, f"evals.jacobian.{name}={j[name]} must be >= 1")
  for name in ("suite", "jacobian"):
    _require(0 <= e[name].seed < 2 ** 32,
             f"evals.{name}.seed={e[name].seed} must be in [0, 2**32) (--config.evals.{name}.seed)")
  evaluated_step(c)
  _require(e.split in ("test", "validation"),
           f"evals.split={e.split!r}: choose test or validation")
  _require(e.split == "test" or c.data.validation_size > 0,
           "evals.split=validation needs held-out examples: set --config.data.validation_size")


def names(value) -> tuple[str, ...]:
  """A list-valued field's names: a tuple or, as the command line gives it, a comma-separated
  string (--config.evals.on_evaluate=suite,jacobian becomes ("suite,jacobian",))."""
  parts = [value] if isinstance(value, str) else list(value)
  return tuple(v.strip() for p in parts for v in str(p).split(",") if v.strip())


def on_evaluate(c) -> tuple[str, ...]:
  """The evaluators --mode=evaluate runs (config.evals.on_evaluate)."""
  return names(c.evals.on_evaluate)


def suite_entries(c) -> list[dict]:
  """The attack entries config.evals.suite asks for: the preset's, the `select`ed ones, then
  its `attacks`."""
  s = c.evals.suite
  entries = evaluate.preset(s.preset) if s.preset else []
  entries += evaluate.named(names(s.select))
  for name, entry in s.attacks.items():
    entries.append({"name": name, **entry.to_dict()})
  return entries


# Config fields that moved, old dotted path -> new one: a command-line override of an old path
# fails with one line naming the new field; a workdir's config.json is read with them moved.
MOVED = {
    "eval.every_steps": "evals.pgd.every_steps",
    "eval.num_examples": "evals.pgd.num_examples",
    "eval.batch_size": "evals.pgd.batch_size",
    "eval.pgd_steps": "evals.pgd.steps",
    "eval.pgd_step_size": "evals.pgd.step_size",
    **{f"evals.{k}": f"evals.suite.{k}" for k in (
        "preset", "eps", "num_examples", "batch_size", "seed", "only_robust", "checks",
        "surrogate_workdir", "output", "attacks")},
    **{f"jacobian.{k}": f"evals.jacobian.{k}" for k in (
        "num_examples", "chunk_size", "outputs", "norms", "power_iters", "adversarial",
        "baseline", "seed")},
    "jacobian.track_every_steps": "evals.jacobian.every_steps",
    "jacobian.track_examples": "evals.jacobian.num_examples",
}


def moved_field(path: str):
  """The new dotted path of a config field that moved (or of a field inside one), else None."""
  for old, new in MOVED.items():
    if path == old or path.startswith(old + "."):
      return new + path[len(old):]
  return None


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def from_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """get_config(arg) of a config file, as `--config=path:arg` builds it; a relative path that
  does not exist from here is taken from the repository root (configs/...)."""
  if not os.path.exists(path):
    path = os.path.join(REPO, path)
  if not os.path.exists(path):
    raise UatError(f"config file {path} not found: pass a path like configs/fashion_mnist.py")
  spec = importlib.util.spec_from_file_location(
      "uat_config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _moved_forward(saved: dict) -> dict:
  """A saved config (nested dicts) with fields of older versions at their new paths (MOVED)."""
  flat: dict[str, object] = {}

  def walk(prefix, node):
    for k, v in node.items():
      path = prefix + k
      if isinstance(v, dict) and v and path not in ("evals.attacks", "evals.suite.attacks"):
        walk(path + ".", v)
      else:
        flat[path] = v

  walk("", saved)
  out: dict = {}
  for path, v in flat.items():
    node = out
    keys = (moved_field(path) or path).split(".")
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = v
  return out


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json) over today's defaults, locked.
  Fields added since the run keep their defaults; fields the code no longer has are an error."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UatError(f"no config.json in {workdir}: is it a uat_jax workdir? Pass the training "
                   "config with --config, or another --workdir")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise UatError(f"cannot read {path} ({e}): pass the training config with --config") from e
  c = base_config()
  saved = _moved_forward(saved)

  def merge(node, values, prefix):
    for k, v in values.items():
      if k not in node:
        raise UatError(f"{path} has field {prefix}{k}, unknown to this version: pass the "
                       "training config with --config")
      if isinstance(node[k], ml_collections.ConfigDict) and isinstance(v, dict):
        if prefix + k == "evals.suite.attacks":  # a registry: its entries are free-form
          for name, entry in v.items():
            node[k][name] = ml_collections.ConfigDict(entry)
        else:
          merge(node[k], v, f"{prefix}{k}.")
      else:
        node[k] = tuple(v) if isinstance(v, list) else v

  merge(c, saved, "")
  c.lock()
  return c
