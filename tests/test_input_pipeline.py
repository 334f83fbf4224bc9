import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from xnas_jax import input_pipeline as ip


def _rows(split):
  return {r.tobytes() for r in split.images.reshape(len(split), -1)}


def test_digits_splits_are_disjoint_deterministic_and_halved():
  a = ip.load_search_data("digits", seed=3)
  b = ip.load_search_data("digits", seed=3)
  c = ip.load_search_data("digits", seed=4)
  assert len(a.train) + len(a.val) + len(a.test) == 1797
  assert abs(len(a.train) - len(a.val)) <= 1
  np.testing.assert_array_equal(a.train.labels, b.train.labels)
  assert not np.array_equal(a.train.labels, c.train.labels)
  # Disjoint by index: the digits set has a few duplicate images, so compare
  # the split positions through a tagged copy.
  full, _ = ip.load_digits()
  assert len(_rows(a.train) & _rows(a.test)) <= len(full.images) - len(_rows(full))
  assert a.image_shape == (8, 8, 1) and a.num_classes == 10
  assert a.train.images.min() >= 0 and a.train.images.max() <= 1


def test_split_indices_partition_the_data():
  # With distinct images, the three splits partition the set exactly.
  data = ip.load_search_data("digits", seed=0)
  full, _ = ip.load_digits()
  uniq = len(_rows(full))
  assert len(_rows(data.train) | _rows(data.val) | _rows(data.test)) == uniq


def test_mock_tfds_loading():
  with tfds.testing.mock_data(num_examples=24):
    data = ip.load_search_data("cifar10", seed=0, test_fraction=0.0)
  assert data.image_shape == (32, 32, 3)
  assert len(data.train) == len(data.val) == 12 and len(data.test) == 24
  assert data.num_classes == 10
  assert data.train.images.dtype == np.float32 and data.train.images.max() <= 1.0


def test_missing_tfds_data_says_how_to_prepare(tmp_path):
  with pytest.raises(ip.DataNotPreparedError, match="TFDS_DATA_DIR") as e:
    ip.load_tfds("svhn_cropped", data_dir=str(tmp_path))
  assert "\n" not in str(e.value)


def test_unknown_dataset():
  with pytest.raises(ValueError, match="'mnist3'"):
    ip.load_search_data("mnist3")


def test_augment_is_deterministic_and_crops_within_padding():
  x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1)
  k = jax.random.key(0)
  a, b = ip.augment(k, x, pad=2, flip=True), ip.augment(k, x, pad=2, flip=True)
  np.testing.assert_array_equal(a, b)
  assert a.shape == x.shape
  c = ip.augment(k, x, pad=0, flip=False, cutout=2)
  assert (np.asarray(c) == 0).sum(axis=(1, 2, 3)).max() <= 4 + 1  # one 2x2 hole (+ pixel 0)


def test_epoch_batches():
  k = jax.random.key(0)
  b = ip.epoch_batches(k, 10, 3, epoch=0)
  assert b.shape == (3, 3) and len(set(b.ravel())) == 9
  np.testing.assert_array_equal(b, ip.epoch_batches(k, 10, 3, epoch=0))
  assert not np.array_equal(b, ip.epoch_batches(k, 10, 3, epoch=1))
  with pytest.raises(ValueError, match="batch_size 11"):
    ip.epoch_batches(k, 10, 11, 0)
