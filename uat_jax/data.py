"""Datasets: TFDS splits held whole in host memory, batches drawn by index.

* Every dataset comes through TFDS. `mnist`, `fashion_mnist`, `cifar10`, `cifar100` and
  `svhn_cropped` use TFDS's own builders (downloaded where the machine can reach the hosts).
* The embedded default, Fashion-MNIST from Debian's `dataset-fashion-mnist` package, is exposed
  through a small TFDS builder with manual files (uat_jax.fashion_mnist): the four IDX files under
  `config.data.manual_dir` (default /usr/share/datasets/fashion-mnist) are prepared once into the
  TFDS data dir, then read like any other TFDS dataset.
* A whole split is held as uint8 [N, H, W, C]; `batch_indices(seed, step, ...)` is a pure function
  of (seed, step), so a run resumed at step N draws the same batches as an uninterrupted one.
* Augmentation (`augment`) runs on device inside the jitted train step, keyed by the step.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os

import jax
import jax.numpy as jnp
import numpy as np

from uat_jax import fashion_mnist, files, lock
from uat_jax.errors import UatError

@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static facts about a dataset; mean/std are per channel on [0, 1] images."""
  tfds_name: str
  shape: tuple[int, int, int]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: str  # default augmentation: "none", "crop" or "crop_flip"
  eps_grid: tuple[float, ...]  # the usual L-inf robustness grid on [0, 1] images
  eval_split: str = "test"
  num_train: int = 0  # examples in the train split (for estimates made without the data)
  num_test: int = 0  # examples in the evaluation split (likewise)


_GRAY_EPS = (0.05, 0.1, 0.15, 0.2, 0.3)
_COLOR_EPS = tuple(e / 255 for e in (2, 4, 8, 12, 16))
DATASETS = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10, (0.1307,), (0.3081,), "none", _GRAY_EPS,
                         num_train=60000, num_test=10000),
    "fashion_mnist": DatasetSpec("fashion_mnist", (28, 28, 1), 10, (0.2860,), (0.3530,), "none",
                                 _GRAY_EPS, num_train=60000, num_test=10000),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), "crop_flip", _COLOR_EPS,
                           num_train=50000, num_test=10000),
    "cifar100": DatasetSpec("cifar100", (32, 32, 3), 100, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), "crop_flip", _COLOR_EPS,
                            num_train=50000, num_test=10000),
    # Digits: no horizontal flip.
    "svhn_cropped": DatasetSpec("svhn_cropped", (32, 32, 3), 10, (0.4377, 0.4438, 0.4728),
                                (0.1980, 0.2010, 0.1970), "crop", _COLOR_EPS,
                                num_train=73257, num_test=26032),
}


def _tfds():
  import tensorflow_datasets as tfds  # heavy import; only where a dataset is loaded
  return tfds


def get_spec(name: str) -> DatasetSpec:
  if name not in DATASETS:
    raise UatError(f"unknown dataset {name!r}: choose one of {sorted(DATASETS)} "
                   "(--config.data.name)")
  return DATASETS[name]


# --------------------------------------------------------------------------------------------
# Loading whole splits.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int32 [N]

  def __len__(self) -> int:
    return int(self.labels.shape[0])


def prepared_once(make_builder, prepare):
  """make_builder()'s builder, prepared: when it is not, `prepare(builder)` runs while this
  process holds the exclusive lock of the dataset's folder (uat_jax.lock, waiting for it), and a
  builder made anew is returned. Processes that start together on a fresh machine (the study's,
  a launch script's) thus prepare a dataset once: the others wait on the lock, then find it
  prepared, instead of racing on TFDS's final rename."""
  builder = make_builder()
  if builder.is_prepared():
    return builder
  with lock.lock(os.path.dirname(builder.data_dir), "preparing the dataset", wait=True,
                 every_process=True):
    builder = make_builder()  # another process may have prepared it meanwhile
    if not builder.is_prepared():
      prepare(builder)
      builder = make_builder()
  return builder


def _builder(data_config):
  """Returns a prepared TFDS builder for `data_config.name`, preparing it if needed."""
  tfds = _tfds()
  spec = get_spec(data_config.name)
  data_dir = data_config.data_dir or None
  if data_config.name == "fashion_mnist" and data_config.manual_dir:
    def prepare_idx(builder):
      fashion_mnist.check_dir(data_config.manual_dir)
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=data_config.manual_dir))
    return prepared_once(lambda: fashion_mnist.builder_cls()(data_dir=data_dir), prepare_idx)

  def prepare_download(builder):
    if not data_config.download:
      raise UatError(
          f"dataset {spec.tfds_name!r} is not prepared in {builder.data_dir}: set "
          f"--config.data.download=True on a machine that reaches the dataset host, or copy a "
          f"prepared TFDS folder there (--config.data.data_dir)")
    try:
      builder.download_and_prepare()
    except Exception as e:  # TFDS raises many kinds; name the cause and the fix in one line.
      raise UatError(f"could not download {spec.tfds_name!r} ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}); prepare it on a machine with "
                     "network access and copy the TFDS data dir, or use the embedded "
                     "fashion_mnist") from e
  return prepared_once(lambda: tfds.builder(spec.tfds_name, data_dir=data_dir), prepare_download)


def load_split(data_config, split: str) -> Split:
  """Loads a whole split into host memory as uint8 images and int32 labels (read-only arrays,
  cached per process: a study trains and evaluates many models in one process)."""
  return _load_split_cached(_DataConfig.of(data_config), split)


@functools.lru_cache(maxsize=4)
def _load_split_cached(data_config: _DataConfig, split: str) -> Split:
  spec = get_spec(data_config.name)
  builder = _builder(data_config)
  if split not in builder.info.splits:
    raise UatError(f"split {split!r} not in {data_config.name} (have {list(builder.info.splits)})")
  images, labels = _decoded(builder, split)
  if images.shape[1:] != spec.shape:
    raise UatError(f"{data_config.name} images have shape {images.shape[1:]}, expected {spec.shape}")
  images.flags.writeable = labels.flags.writeable = False
  return Split(images, labels)


ARRAY_CACHE = "uat_jax_arrays"  # a folder inside the prepared TFDS dataset version


def _decode(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
  arrays = _tfds().as_numpy(builder.as_dataset(split=split, batch_size=-1))
  return np.asarray(arrays["image"], dtype=np.uint8), np.asarray(arrays["label"], dtype=np.int32)


def _decoded(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """A split's images (uint8) and labels (int32). TFDS stores images as PNG, and decoding a
  whole split takes seconds (60,000 Fashion-MNIST images: ~5 s on 2 CPU cores), so the decoded
  arrays are kept as .npy files beside the prepared TFDS files after the first decode and read
  from there (milliseconds) by every later run. A data dir that cannot be written is decoded
  every time, and so is a builder that is not prepared on disk (TFDS's mock data in tests)."""
  if not builder.is_prepared():
    return _decode(builder, split)
  folder = os.path.join(os.fspath(builder.data_dir), ARRAY_CACHE)
  paths = [os.path.join(folder, f"{split}-{part}.npy") for part in ("images", "labels")]
  expected = builder.info.splits[split].num_examples
  try:
    images, labels = (np.load(p, allow_pickle=False) for p in paths)
    if len(images) == len(labels) == expected and images.dtype == np.uint8:
      return images, labels.astype(np.int32)
  except (OSError, ValueError):
    pass  # not cached yet (or unreadable): decode
  images, labels = _decode(builder, split)
  try:
    os.makedirs(folder, exist_ok=True)
    for path, array in zip(paths, (images, labels)):
      buf = io.BytesIO()
      np.save(buf, array)
      files.write_atomic(path, buf.getvalue(), every_process=True)
  except OSError:
    pass  # a read-only data dir: decode next time too
  return images, labels


@dataclasses.dataclass(frozen=True)
class _DataConfig:
  """The fields of config.data that loading depends on (a hashable cache key)."""
  name: str
  data_dir: str
  manual_dir: str
  download: bool

  @classmethod
  def of(cls, data_config) -> "_DataConfig":
    return cls(data_config.name, data_config.data_dir, data_config.manual_dir,
               bool(data_config.download))


VALIDATION_SEED = 0x7A11D  # fixed: the validation split never depends on the run's seed


def _carve_validation(data_config, size: int) -> tuple[Split, Split]:
  """(kept, held out) of the train split: cached, as training and evaluation both ask."""
  return _carve_validation_cached(_DataConfig.of(data_config), size)


@functools.lru_cache(maxsize=4)
def _carve_validation_cached(data_config: _DataConfig, size: int) -> tuple[Split, Split]:
  train = load_split(data_config, "train")
  if not 0 < size < len(train):
    raise UatError(f"data.validation_size={size} must be in (0, {len(train)}): the number of "
                   "training examples held out for validation")
  perm = np.random.default_rng(VALIDATION_SEED).permutation(len(train))
  held, kept = np.sort(perm[:size]), np.sort(perm[size:])
  parts = []
  for idx in (kept, held):
    part = Split(train.images[idx], train.labels[idx])
    part.images.flags.writeable = part.labels.flags.writeable = False
    parts.append(part)
  return tuple(parts)


TRAIN_SUBSET_SEED = 0x5AB5E7  # fixed: the subset never depends on the run's seed


def train_split(data_config) -> Split:
  """The examples training draws from: the train split, less the validation examples when
  data.validation_size > 0, and, when data.train_size > 0, a fixed random subset of that many of
  the rest (a data-limited regime; the same subset for every seed and method)."""
  if data_config.get("validation_size", 0) > 0:
    split = _carve_validation(data_config, data_config.validation_size)[0]
  else:
    split = load_split(data_config, "train")
  size = data_config.get("train_size", 0)
  if not size:
    return split
  if not 0 < size <= len(split):
    raise UatError(f"data.train_size={size} must be in (0, {len(split)}]: the number of training "
                   "examples to keep (0 = all)")
  idx = np.sort(np.random.default_rng(TRAIN_SUBSET_SEED).permutation(len(split))[:size])
  part = Split(split.images[idx], split.labels[idx])
  part.images.flags.writeable = part.labels.flags.writeable = False
  return part


def eval_split(data_config) -> Split:
  """The examples evaluation uses: the test split, or, when data.validation_size > 0 (model
  selection, hyper-parameter sweeps), a fixed random subset of that many train examples that
  training never sees. The test split is then not read at all."""
  if data_config.get("validation_size", 0) > 0:
    return _carve_validation(data_config, data_config.validation_size)[1]
  return load_split(data_config, get_spec(data_config.name).eval_split)


def eval_examples(data_config, num_examples: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The first `num_examples` (0: all) examples of the evaluation split (eval_split: the test
  split, or the validation examples when data.validation_size > 0) as float32 images in [0, 1]
  and int32 labels."""
  return _first_as_float(eval_split(data_config), num_examples)


def eval_split_name(data_config) -> str:
  """What eval_split reads, for reports: "test" or "validation (N held-out train examples)"."""
  size = data_config.get("validation_size", 0)
  return f"validation ({size} held-out train examples)" if size > 0 else "test"


def images(data_config, split: str = "test",
           num_examples: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The first `num_examples` (0: all) images of a split as float32 [N, H, W, C] in [0, 1] and
  their int32 labels: "test" (the default), "validation" (the data.validation_size train
  examples held out from training) or "train" (what training draws from)."""
  if split == "test":
    part = load_split(data_config, get_spec(data_config.name).eval_split)
  elif split == "validation":
    size = data_config.get("validation_size", 0)
    if size <= 0:
      raise UatError("split 'validation' needs data.validation_size > 0 (the train examples held "
                     "out from training); use split='test' otherwise")
    part = _carve_validation(data_config, size)[1]
  elif split == "train":
    part = train_split(data_config)
  else:
    raise UatError(f"unknown split {split!r}: choose test, validation or train")
  return _first_as_float(part, num_examples)


def _first_as_float(split: Split, num_examples: int) -> tuple[np.ndarray, np.ndarray]:
  """The first `num_examples` (0: all) of a split: float32 images in [0, 1], int32 labels."""
  n = len(split) if not num_examples else min(num_examples, len(split))
  return split.images[:n].astype(np.float32) / 255.0, np.array(split.labels[:n], np.int32)


# --------------------------------------------------------------------------------------------
# Batching: a pure function of (seed, step).
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
  """Indices of the training batch at `step`: epochs are fresh permutations of range(n).

  Position p = step * batch_size + i of the endless stream maps to example
  perm_{p // n}[p % n], so every epoch sees each example exactly once and a batch depends only on
  (seed, step).
  """
  positions = step * batch_size + np.arange(batch_size, dtype=np.int64)
  epochs, offsets = np.divmod(positions, n)
  out = np.empty(batch_size, dtype=np.int64)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    out[sel] = _epoch_permutation(seed, int(epoch), n)[offsets[sel]]
  return out


def train_batch(split: Split, seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
  idx = batch_indices(seed, step, batch_size, len(split))
  return {"image": split.images[idx], "label": split.labels[idx]}


def pad_to(a: np.ndarray, size: int) -> np.ndarray:
  """Zero-pads the leading (batch) axis of `a` to `size`, so a jitted step sees one shape."""
  if a.shape[0] == size:
    return a
  return np.concatenate([a, np.zeros((size - a.shape[0], *a.shape[1:]), a.dtype)])


# --------------------------------------------------------------------------------------------
# On-device preprocessing (inside the jitted step).
# --------------------------------------------------------------------------------------------

def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def augment(key: jax.Array, images: jax.Array, kind: str, pad: int = 4) -> jax.Array:
  """Standard augmentation on float images: zero-pad `pad` + random crop, optional h-flip."""
  if kind == "none":
    return images
  if kind not in ("crop", "crop_flip"):
    raise UatError(f"unknown augmentation {kind!r}: choose none, crop or crop_flip "
                   "(--config.data.augment)")
  b, h, w, _ = images.shape
  k_crop, k_flip = jax.random.split(key)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

  out = jax.vmap(crop)(padded, offsets)
  if kind == "crop_flip":
    flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    out = jnp.where(flip, out[:, :, ::-1, :], out)
  return out
