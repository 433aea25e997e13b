"""The embedded Fashion-MNIST: a TFDS builder over the four IDX files that Debian's
`dataset-fashion-mnist` package installs (or any folder holding them)."""

from __future__ import annotations

import functools
import gzip
import os

import numpy as np

from uat_jax.errors import UatError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
INSTALL_HINT = ("install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or "
                "point --config.data.manual_dir at a folder holding the four Fashion-MNIST IDX .gz files")


def read_idx(path: str) -> np.ndarray:
  """Reads one (optionally gzipped) IDX file into a numpy array (uint8 data only)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise UatError(f"{path} is not an unsigned-byte IDX file; reinstall it ({INSTALL_HINT})")
  ndim = data[3]
  dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise UatError(f"{path} is truncated ({body.size} bytes for shape {dims}); reinstall it "
                   f"({INSTALL_HINT})")
  return body.reshape(dims)


@functools.cache
def builder_cls():
  """Defines the builder lazily so that importing uat_jax does not import TensorFlow."""
  import tensorflow_datasets as tfds  # heavy import; only where a dataset is loaded

  class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Xiao et al. 2017) from local IDX files, e.g. Debian's package."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Fashion-MNIST 60k/10k from the published IDX files."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        f"and t10k-labels-idx1-ubyte.gz in the manual dir: {INSTALL_HINT}.")

    def _info(self):
      return self.dataset_info_from_configs(
          description="Fashion-MNIST read from local IDX files (same images as TFDS fashion_mnist).",
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(28, 28, 1)),
              "label": tfds.features.ClassLabel(names=list(CLASSES)),
          }),
          supervised_keys=("image", "label"),
          disable_shuffling=True,  # keep the published IDX order
          homepage="https://github.com/zalandoresearch/fashion-mnist",
      )

    def _split_generators(self, dl_manager):
      manual = os.fspath(dl_manager.manual_dir)
      return {split: self._generate_examples(*(os.path.join(manual, f) for f in files))
              for split, files in FILES.items()}

    def _generate_examples(self, images_path, labels_path):
      images = read_idx(images_path)
      labels = read_idx(labels_path)
      if images.shape[0] != labels.shape[0]:
        raise UatError(f"{images_path} and {labels_path} disagree on the number of examples")
      for i in range(images.shape[0]):
        yield i, {"image": images[i][..., None], "label": int(labels[i])}

  return FashionMnistIdx


def check_dir(manual_dir: str) -> None:
  missing = [f for files in FILES.values() for f in files
             if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing:
    raise UatError(f"Fashion-MNIST files {missing} not found in {manual_dir}: {INSTALL_HINT}")
