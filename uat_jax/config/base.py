"""The base config every recipe starts from, the method and variant rules, and the evaluator
instances. Imports ml_collections only: a recipe can be read, listed and packaged without JAX.
Values are checked by uat_jax.validation, which the entry points call.

A recipe does `return base.build(arg, dataset_overrides)`; `arg` is the part after the colon in
`--config=cifar10:at_entm,runlocal`: a method name, then optional variants (runlocal: a
smoke-test budget; bf16: bfloat16 compute).
"""

from __future__ import annotations

import math

import ml_collections

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
VARIANTS = ("runlocal", "bf16")  # bf16: bfloat16 compute (docs/performance.md)
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "piecewise", "cosine")
# Debian's dataset-fashion-mnist installs the IDX files here (uat_jax.fashion_mnist.DEFAULT_DIR).
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def pgd_evaluator() -> ml_collections.ConfigDict:
  """type pgd: clean accuracy, PGD accuracy at the training eps (attack.eps) and mean predictive
  entropy (the default instance logs eval/clean_accuracy, eval/pgd_accuracy, eval/mean_entropy)."""
  e = ml_collections.ConfigDict()
  e.type = "pgd"  # the evaluator class: pgd | suite | jacobian
  e.every_steps = 1000  # 0 = not during training
  e.num_examples = 0  # 0 = the whole split
  e.batch_size = 500  # rounded up to a multiple of the device count
  e.steps = 20
  e.step_size = 0.025
  return e


def suite_evaluator() -> ml_collections.ConfigDict:
  """type suite: the attack suite (uat_jax.evaluate) over an eps grid with gradient-masking
  checks; --mode=evaluate writes its reports to <workdir>/eval/<output>/."""
  e = ml_collections.ConfigDict()
  e.type = "suite"  # the evaluator class: pgd | suite | jacobian
  e.every_steps = 0  # 0 = not during training (--mode=evaluate only)
  e.preset = "quick"  # quick | paper | strong | adaptive | "" (only the ones below)
  # Attacks by name, after the preset's: a comma-separated list of uat_jax.evaluate.NAMED, e.g.
  # --config.evals.suite.preset= --config.evals.suite.select=apgd_ce,apgd_dlr
  e.select = ""
  e.eps = ()  # L-inf eps grid on the [0, 1] scale; () = the dataset's default grid
  e.num_examples = 0  # first N examples; 0 = the whole split
  e.batch_size = 500  # rounded up to a multiple of the device count
  e.seed = 0
  # Each attack only on the points every earlier one failed on (AutoAttack); None = the preset's
  # choice (True for strong).
  e.only_robust = ml_collections.config_dict.placeholder(bool)
  e.checks = True  # gradient-masking checks (a few extra attack runs)
  e.surrogate_workdir = ""  # another workdir: the surrogate of transfer attacks
  e.output = ""  # results go to <workdir>/eval/<output>
  # Extra attacks run after the preset's, by name, e.g. in a config file:
  #   c.evals.suite.attacks.pgd200 = ml_collections.ConfigDict(dict(attack="pgd", steps=200))
  # (parameters per attack: uat_jax.evaluate.ATTACKS).
  e.attacks = ml_collections.ConfigDict()
  return e


def jacobian_evaluator() -> ml_collections.ConfigDict:
  """type jacobian: input-Jacobian norms. During training and in --mode=evaluate: mean norms on
  the first num_examples clean points, logged as <name>/<output>/<norm> and <name>/loss_grad.
  --mode=jacobian compares workdirs on the same points (and on PGD points, `adversarial`)."""
  e = ml_collections.ConfigDict()
  e.type = "jacobian"  # the evaluator class: pgd | suite | jacobian
  e.every_steps = 0  # 0 = not during training
  e.num_examples = 1000  # first N examples; 0 = the whole split
  e.chunk_size = 64  # examples per compiled chunk (bounds memory)
  e.outputs = ("logits", "probs")  # logits | probs | log_probs
  e.norms = ("fro", "spectral", "inf")
  e.power_iters = 50  # spectral norm: power iterations on J^T J
  # --mode=jacobian: also on PGD points (attack.eps, evals.pgd.steps / step_size)
  e.adversarial = True
  e.baseline = ""  # --mode=jacobian: the workdir the others are compared with
  e.seed = 0
  return e


EVALUATOR_TYPES = {"pgd": pgd_evaluator, "suite": suite_evaluator, "jacobian": jacobian_evaluator}


def evaluator(type_: str, **fields) -> ml_collections.ConfigDict:
  """A new evaluator instance of `type_` (pgd, suite, jacobian) with its defaults and `fields`
  set, e.g. evaluator("suite", preset="strong", output="strong")."""
  if type_ not in EVALUATOR_TYPES:
    raise UatError(f"unknown evaluator type {type_!r}: choose one of {sorted(EVALUATOR_TYPES)}")
  e = EVALUATOR_TYPES[type_]()
  e.update(fields)
  return e


def evaluators(c) -> dict[str, ml_collections.ConfigDict]:
  """{name: instance} of config.evals: every ConfigDict in it with a `type`."""
  return {k: v for k, v in c.evals.items()
          if isinstance(v, ml_collections.ConfigDict) and "type" in v}


def scalar_prefix(name: str, type_: str) -> str:
  """The prefix of an instance's logged scalars: its name, except the default pgd instance,
  which logs under eval/ (the metric the recipes keep their best checkpoints by)."""
  return "eval" if (name, type_) == ("pgd", "pgd") else name


def names(value) -> tuple[str, ...]:
  """A list-valued field's names: a tuple or, as the command line gives it, a comma-separated
  string (--config.evals.on_evaluate=suite,jacobian becomes ("suite,jacobian",))."""
  parts = [value] if isinstance(value, str) else list(value)
  return tuple(v.strip() for p in parts for v in str(p).split(",") if v.strip())


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "at_entm"
  c.seed = 0  # initialization, data order, augmentation and attack keys, in [0, 2**32)

  c.data = ml_collections.ConfigDict()
  c.data.name = "fashion_mnist"
  c.data.data_dir = ""  # TFDS data dir; "" = TFDS default (~/tensorflow_datasets or TFDS_DATA_DIR)
  # Fashion-MNIST only: local IDX files (Debian's dataset-fashion-mnist); "" = TFDS download.
  c.data.manual_dir = FASHION_MNIST_DIR
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
  # Weight averaging: decay of an exponential moving average of the parameters, kept in the
  # optimizer state and evaluated, checkpoint-selected and loaded in their place (0: none).
  c.optimizer.weight_average = 0.0
  c.optimizer.warmup_steps = 0

  # Adversarial training (methods at, at_entm, at_ls): L-inf PGD with random start.
  c.attack = ml_collections.ConfigDict()
  c.attack.eps = 0.1  # L-inf radius of the training attack, on the [0, 1] pixel scale
  c.attack.step_size = 0.025  # PGD step (signed gradient), same scale
  c.attack.steps = 10  # PGD steps per training batch (AT methods)
  c.attack.random_start = True  # uniform start in the eps-ball
  c.attack.loss = "ce"  # ce | objective (the method's regularized loss)
  c.attack.bn_mode = "train"  # train: batch statistics, updates discarded | eval: running stats
  # Steps per iteration of the rolled attack loop: 1 keeps compile time flat in the step count
  # and runs as fast as unrolled (bench/RESULTS.md); n > 1 or True (all) unroll it.
  c.attack.unroll = 1

  c.regularizer = ml_collections.ConfigDict()
  c.regularizer.beta = 0.3  # EntM weight: CE - beta * H
  c.regularizer.alpha = 0.2  # LS: targets (1 - alpha) onehot + alpha / K
  c.regularizer.on = "adversarial"  # adversarial | clean | both (under AT)

  # Evaluators (big_vision style): every ConfigDict under `evals` with a `type` (pgd, suite,
  # jacobian) is one named instance; a config file adds more, e.g.
  #   c.evals.strong = config.evaluator("suite", preset="strong", output="strong")
  # Each reads the evaluation split and runs during training every `every_steps` steps and after
  # the last one (0: not during training); --mode=evaluate runs those named in
  # evals.on_evaluate on a checkpoint. Their scalars go to metrics.jsonl and TensorBoard under
  # the instance's name (`scalar_prefix`: the default pgd instance logs under eval/).
  c.evals = ml_collections.ConfigDict()
  c.evals.on_evaluate = ("suite",)  # instances --mode=evaluate runs, e.g. suite,jacobian
  c.evals.checkpoint = "last"  # --mode=evaluate / jacobian: last | best | a step number
  # The split --mode=evaluate / jacobian read: test | validation (the data.validation_size
  # held-out train examples). During training the evaluators read the validation examples when
  # data.validation_size > 0 (model selection), else the test split.
  c.evals.split = "test"
  # Where --mode=evaluate / jacobian write: "" = into the workdir (W/eval/<output>/,
  # W/jacobian/); a directory = there instead (DIR/eval/<output>/, DIR/jacobian/<workdir name>/),
  # e.g. for a read-only or shared model directory.
  c.evals.output_dir = ""
  c.evals.pgd = evaluator("pgd")
  c.evals.suite = evaluator("suite")
  c.evals.jacobian = evaluator("jacobian")

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
                     num_epochs: float, num_train: int) -> None:
  """The Rice et al. 2020 PGD-AT recipe for 32x32 datasets: PreAct ResNet-18, eps 8/255 with
  10 steps of 2/255, SGD momentum 0.9, weight decay 5e-4, batch 128, piecewise decay at 50%/75%,
  early stopping on 1,000 held-out training images (PGD-20 every epoch, best checkpoint kept).
  `num_train`: the size of the dataset's train split (uat_jax.data's spec; a test checks it)."""
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
  early_stopping(c, validation_size=1000, num_train=num_train)


def early_stopping(c: ml_collections.ConfigDict, validation_size: int, num_train: int) -> None:
  """Rice et al.'s early stopping: hold out `validation_size` training images, run the PGD
  evaluator on them once an epoch, and keep the best checkpoint by its robust accuracy."""
  c.data.validation_size = validation_size
  c.evals.pgd.every_steps = math.ceil((num_train - validation_size) / c.batch_size)  # one epoch
  c.evals.pgd.num_examples = validation_size
  c.best_checkpoint.metric = "eval/pgd_accuracy"


def parse_arg(arg: str | None) -> tuple[str, tuple[str, ...]]:
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  method = parts[0] if parts else "at_entm"
  if method not in METHOD_DEFAULTS:
    raise UatError(f"unknown method {method!r}: choose one of {tuple(METHOD_DEFAULTS)} "
                   "(e.g. --config=fashion_mnist:at_entm)")
  for v in parts[1:]:
    if v not in VARIANTS:
      raise UatError(f"unknown config variant {v!r}: choose from {VARIANTS} "
                     "(e.g. --config=fashion_mnist:at_entm,runlocal)")
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
  if "bf16" in variants:  # mixed precision: bfloat16 compute, float32 parameters and optimizer
    c.dtype = "bfloat16"
  c.lock()
  return c
