"""Data: the embedded Fashion-MNIST is the published one; batches are pure in (seed, step)."""

import gzip
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import helpers
from tests.helpers import fmnist_data_config
from uat_jax import data, fashion_mnist, lock, sharding
from uat_jax.errors import UatError


def test_fashion_mnist_counts_shapes_dtypes_histograms(fmnist):
  train, test = fmnist["train"], fmnist["test"]
  assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
  assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
  # Fashion-MNIST is balanced: exactly 6,000 / 1,000 images per class.
  np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
  # The published order (the first training images are ankle boot, T-shirt, T-shirt, dress, ...).
  np.testing.assert_array_equal(train.labels[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
  np.testing.assert_array_equal(test.labels[:10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
  assert train.images.max() == 255 and train.images.min() == 0


def test_tfds_split_equals_the_idx_files(fmnist):
  for split, (images_file, labels_file) in fashion_mnist.FILES.items():
    images = fashion_mnist.read_idx(os.path.join(fashion_mnist.DEFAULT_DIR, images_file))
    labels = fashion_mnist.read_idx(os.path.join(fashion_mnist.DEFAULT_DIR, labels_file))
    np.testing.assert_array_equal(fmnist[split].images[..., 0], images)
    np.testing.assert_array_equal(fmnist[split].labels, labels)


def test_missing_fashion_mnist_gives_install_hint(tmp_path):
  c = fmnist_data_config(manual_dir=str(tmp_path / "nothing"), data_dir=str(tmp_path / "tfds"))
  with pytest.raises(UatError, match="apt-get install dataset-fashion-mnist"):
    data.load_split(c, "train")


def test_unprepared_tfds_dataset_without_download_is_a_clear_error(tmp_path):
  c = fmnist_data_config(name="mnist", data_dir=str(tmp_path), download=False)
  with pytest.raises(UatError, match="not prepared.*download=True"):
    data.load_split(c, "train")


# A stand-in for a TFDS builder: prepared once its folder holds "done"; preparing takes a while
# and counts itself in "prepared_by" (one line per process that prepared).
_FAKE_BUILDER = """
import os, sys, time
from uat_jax import data
root = sys.argv[1]

class Builder:
  data_dir = os.path.join(root, "dataset", "1.0.0")
  def is_prepared(self):
    return os.path.exists(os.path.join(self.data_dir, "done"))

def prepare(builder):
  with open(os.path.join(root, "prepared_by"), "a") as f:
    f.write(str(os.getpid()) + chr(10))
  time.sleep(1.5)  # long enough that the other process asks meanwhile
  os.makedirs(builder.data_dir, exist_ok=True)
  open(os.path.join(builder.data_dir, "done"), "w").close()

assert data.prepared_once(Builder, prepare).is_prepared()
"""


def test_processes_starting_together_prepare_a_dataset_once(tmp_path):
  env = {**os.environ, "PYTHONPATH": helpers.REPO}
  procs = [subprocess.Popen([sys.executable, "-c", _FAKE_BUILDER, str(tmp_path)], env=env,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
  assert len((tmp_path / "prepared_by").read_text().splitlines()) == 1
  assert (tmp_path / "dataset" / lock.LOCK_FILE).exists()


def test_unknown_dataset():
  with pytest.raises(UatError, match="unknown dataset 'imagenet'"):
    data.get_spec("imagenet")


def test_truncated_idx_file_is_reported(tmp_path):
  src = os.path.join(fashion_mnist.DEFAULT_DIR, "t10k-labels-idx1-ubyte.gz")
  with gzip.open(src, "rb") as f:
    raw = f.read()
  bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
  with gzip.open(bad, "wb") as f:
    f.write(raw[:-100])
  with pytest.raises(UatError, match="truncated"):
    fashion_mnist.read_idx(str(bad))


def test_batches_are_pure_in_seed_and_step():
  n, b = 1000, 128
  first = [data.batch_indices(0, s, b, n) for s in range(20)]
  data._epoch_permutation.cache_clear()
  # A resumed run computes step 13 without having computed steps 0..12.
  np.testing.assert_array_equal(data.batch_indices(0, 13, b, n), first[13])
  assert not np.array_equal(data.batch_indices(1, 13, b, n), first[13])
  # Every epoch visits each example exactly once, across batch boundaries.
  stream = np.concatenate(first)
  for e in range(2):
    np.testing.assert_array_equal(np.sort(stream[e * n:(e + 1) * n]), np.arange(n))


def test_batches_pad_mask_and_select(fmnist):
  from uat_jax.batching import Batches
  test = fmnist["test"]
  batches = Batches({"image": test.images[:700], "label": test.labels[:700]}, 300)
  out = list(batches())
  assert [b["image"].shape[0] for _, _, b in out] == [300, 300, 300]
  assert sum(b["mask"].sum() for _, _, b in out) == 700
  np.testing.assert_array_equal(out[2][2]["label"][:100], test.labels[600:700])
  assert out[2][2]["mask"][100:].sum() == 0 and list(out[2][1]) == list(range(600, 700))
  # A subset keeps its order; the batch size is rounded up to a multiple of the mesh's devices.
  (_, sel, b), = Batches({"label": test.labels}, 5, sharding.make_mesh(1))(np.array([9, 3]))
  assert list(sel) == [9, 3] and list(np.asarray(b["label"])[:2]) == [test.labels[9],
                                                                      test.labels[3]]


def test_eval_and_test_images_are_float_in_unit_range():
  c = helpers.fmnist_data_config()
  x, y = data.images(c, "test", 10)
  assert x.dtype == np.float32 and x.shape == (10, 28, 28, 1) and 0 <= x.min() <= x.max() <= 1
  assert y.dtype == np.int32 and y.shape == (10,)
  with pytest.raises(UatError, match="needs data.validation_size > 0"):
    data.images(c, "validation")
  c.validation_size = 100
  xv, _ = data.eval_examples(c, 5)  # evaluation reads the validation examples...
  np.testing.assert_array_equal(xv, data.images(c, "validation", 5)[0])
  np.testing.assert_array_equal(data.images(c, "test", 10)[0], x)  # ...the test split stays


def test_augment_crop_and_flip():
  x = jax.random.uniform(jax.random.PRNGKey(0), (16, 32, 32, 3))
  assert data.augment(jax.random.PRNGKey(1), x, "none") is x
  out = np.asarray(data.augment(jax.random.PRNGKey(1), x, "crop"))
  padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(16):  # each crop is a 32x32 window of the zero-padded image
    assert any(np.array_equal(out[i], padded[i, r:r + 32, c:c + 32])
               for r in range(9) for c in range(9))
  flipped = np.asarray(data.augment(jax.random.PRNGKey(2), x, "crop_flip"))
  assert flipped.shape == x.shape
  np.testing.assert_array_equal(flipped, data.augment(jax.random.PRNGKey(2), x, "crop_flip"))
  with pytest.raises(UatError, match="unknown augmentation"):
    data.augment(jax.random.PRNGKey(0), x, "mixup")


def test_validation_split_is_held_out_of_training_and_fixed(fmnist):
  c = fmnist_data_config(validation_size=5000)
  train, val = data.train_split(c), data.eval_split(c)
  assert len(train) == 55000 and len(val) == 5000
  # Disjoint, together the whole train split, independent of anything but the size.
  full = fmnist["train"]
  key = lambda s: {(img.tobytes(), int(lab)) for img, lab in zip(s.images, s.labels)}
  assert not key(train) & key(val) and len(key(train) | key(val)) == len(key(full))
  np.testing.assert_array_equal(data.eval_split(c).labels, val.labels)
  assert np.bincount(val.labels, minlength=10).min() > 400  # a random subset, all classes
  np.testing.assert_array_equal(data.eval_split(fmnist_data_config()).labels, fmnist["test"].labels)
  with pytest.raises(UatError, match="validation_size=60000 must be in"):
    data.train_split(fmnist_data_config(validation_size=60000))


def test_decoded_splits_are_kept_beside_the_tfds_files(fmnist, tmp_path):
  """The first load decodes the TFDS files and keeps .npy arrays in the prepared dataset's
  folder; later loads read them. A damaged array file is decoded again and replaced."""
  prepared = data._builder(fmnist_data_config()).data_dir  # <data_dir>/fashion_mnist_idx/1.0.0
  data_dir = tmp_path / "tfds"
  copy = data_dir / os.path.relpath(prepared, os.path.dirname(os.path.dirname(prepared)))
  shutil.copytree(prepared, copy, ignore=shutil.ignore_patterns(data.ARRAY_CACHE))
  c = fmnist_data_config(data_dir=str(data_dir))
  cache = copy / data.ARRAY_CACHE
  for attempt in ("decode", "cached", "damaged"):
    data._load_split_cached.cache_clear()
    if attempt == "damaged":
      np.save(cache / "test-labels.npy", np.zeros(5, np.int32))  # too short: not used
    split = data.load_split(c, "test")
    np.testing.assert_array_equal(split.images, fmnist["test"].images)
    np.testing.assert_array_equal(split.labels, fmnist["test"].labels)
    assert split.labels.dtype == np.int32 and not split.images.flags.writeable
    assert sorted(os.listdir(cache)) == ["test-images.npy", "test-labels.npy"], attempt
    written = os.stat(cache / "test-images.npy").st_mtime_ns
    if attempt == "cached":
      assert written == first_written  # read, not written again
    first_written = written
  assert len(np.load(cache / "test-labels.npy")) == 10000  # replaced


def test_train_size_keeps_a_fixed_subset_of_the_training_examples(fmnist):
  c = helpers.fmnist_data_config(validation_size=100, train_size=500)
  a, b = data.train_split(c), data.train_split(c)
  assert len(a) == 500 and a.images.shape == (500, 28, 28, 1) and not a.images.flags.writeable
  np.testing.assert_array_equal(a.labels, b.labels)  # fixed: no seed involved
  held = data.eval_split(c)  # the subset never overlaps the validation examples
  rows = {r.tobytes() for r in held.images}
  assert not any(r.tobytes() in rows for r in a.images[:100])
  c.train_size = 0
  assert len(data.train_split(c)) == len(fmnist["train"]) - 100
  c.train_size = 10 ** 6
  with pytest.raises(UatError, match="data.train_size=1000000 must be in"):
    data.train_split(c)
