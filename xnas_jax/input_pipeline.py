"""Data: the embedded digits set, TFDS image sets, splits, augmentation.

Every data set is loaded whole into NumPy arrays (images NHWC float32 in
[0, 1], integer labels); searches on CIFAR-sized data keep them on the device
and gather batches inside the jitted step, so no batch crosses from the host
per step.  Augmentation is a pure function of a ``jax.random`` key.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

TFDS_NAMES = ("cifar10", "cifar100", "svhn_cropped", "fashion_mnist")
SYNTHETIC = {"synthetic_cifar10": ((32, 32, 3), 10, 2048)}  # shape, classes, size
DATASETS = ("digits",) + TFDS_NAMES + tuple(SYNTHETIC)


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # [n, H, W, C] float32 in [0, 1]
  labels: np.ndarray  # [n] int32

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class SearchData:
  """The two halves of the search split, the held-out test set, and stats."""
  train: Split  # trains the network weights
  val: Split  # trains the architecture weights
  test: Split
  num_classes: int
  mean: np.ndarray  # per-channel mean of the training images
  std: np.ndarray  # per-channel std of the training images

  @property
  def image_shape(self) -> tuple[int, ...]:
    return self.train.images.shape[1:]


class DataNotPreparedError(RuntimeError):
  """A TFDS data set is not prepared in the local data directory."""


def load_digits() -> tuple[Split, int]:
  """scikit-learn's digits: 1797 real 8x8 grey images of 10 digits."""
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  d = datasets.load_digits()
  images = (d.images.astype(np.float32) / 16.0)[..., None]
  return Split(images, d.target.astype(np.int32)), 10


def load_synthetic(name: str, seed: int = 0) -> tuple[Split, int]:
  """Uniform random images of a real data set's shape (for benchmarks only)."""
  shape, num_classes, n = SYNTHETIC[name]
  rng = np.random.default_rng(seed)
  images = rng.random((n,) + shape, dtype=np.float32)
  return Split(images, rng.integers(0, num_classes, n).astype(np.int32)), num_classes


def _tfds_split(name: str, split: str, data_dir: str | None) -> Split:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for a missing data set
    where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    raise DataNotPreparedError(
        f"data set {name!r} is not prepared in {where} ({type(e).__name__}); on a machine "
        f"with internet run `tfds build {name}` (or python -c \"import tensorflow_datasets "
        f"as tfds; tfds.builder('{name}').download_and_prepare()\") and point TFDS_DATA_DIR "
        f"at the directory it wrote") from None
  n = len(source)
  first = source[0]
  images = np.empty((n,) + tuple(np.shape(first["image"])), np.uint8)
  labels = np.empty((n,), np.int32)
  for i in range(n):
    ex = source[i]
    images[i] = ex["image"]
    labels[i] = ex["label"]
  return Split(images.astype(np.float32) / 255.0, labels)


def load_tfds(name: str, data_dir: str | None = None) -> tuple[Split, Split, int]:
  """Train and test splits of a TFDS image-classification data set."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if name not in TFDS_NAMES:
    raise ValueError(f"unknown data set {name!r}; expected one of {list(DATASETS)}")
  train = _tfds_split(name, "train", data_dir)
  test = _tfds_split(name, "test", data_dir)
  try:
    num_classes = tfds.builder(name, data_dir=data_dir).info.features["label"].num_classes
  except Exception:  # pylint: disable=broad-except
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
  return train, test, num_classes


def _take(split: Split, idx: np.ndarray) -> Split:
  return Split(split.images[idx], split.labels[idx])


def load_search_data(name: str, seed: int = 0, *, test_fraction: float = 0.2,
                     train_fraction: float = 0.5, data_dir: str | None = None,
                     limit: int = 0) -> SearchData:
  """Loads a data set and splits it deterministically by ``seed``.

  The search split of the training set is cut in two halves (``train_fraction``
  = 0.5 as in DARTS and XNAS): one trains the weights, the other the
  architecture.  Digits has no official test split, so ``test_fraction`` of it
  is held out first.

  Args:
    name: ``digits`` or a TFDS name in ``TFDS_NAMES``.
    seed: seed of the permutation that makes the splits.
    limit: if positive, use only this many training images (smoke runs).
  """
  rng = np.random.default_rng(seed)
  if name == "digits" or name in SYNTHETIC:
    full, num_classes = load_digits() if name == "digits" else load_synthetic(name, seed)
    perm = rng.permutation(len(full))
    n_test = int(round(test_fraction * len(full)))
    test, train_all = _take(full, perm[:n_test]), _take(full, perm[n_test:])
  elif name in TFDS_NAMES:
    train_all, test, num_classes = load_tfds(name, data_dir)
    train_all = _take(train_all, rng.permutation(len(train_all)))
  else:
    raise ValueError(f"unknown data set {name!r}; expected one of {list(DATASETS)}")
  if limit > 0:
    train_all = _take(train_all, np.arange(min(limit, len(train_all))))
  n_train = int(round(train_fraction * len(train_all)))
  train, val = _take(train_all, np.arange(n_train)), _take(train_all, np.arange(n_train, len(train_all)))
  mean = train.images.mean(axis=(0, 1, 2))
  std = train.images.std(axis=(0, 1, 2)) + 1e-6
  return SearchData(train, val, test, num_classes, mean.astype(np.float32), std.astype(np.float32))


def augment(key: jax.Array, images: jax.Array, *, pad: int = 4, flip: bool = True,
            cutout: int = 0) -> jax.Array:
  """Pad-and-random-crop, random horizontal flip, cutout (NHWC, per image).

  Deterministic given ``key``.  ``pad=0`` disables cropping; ``cutout`` is the
  side of the zeroed square (DeVries & Taylor), 0 disables it.
  """
  b, h, w, _ = images.shape
  k_crop, k_flip, k_cut = jax.random.split(key, 3)
  if pad > 0:
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offs = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
    images = jax.vmap(lambda im, o: jax.lax.dynamic_slice(
        im, (o[0], o[1], 0), (h, w, im.shape[-1])))(padded, offs)
  if flip:
    do = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    images = jnp.where(do, images[:, :, ::-1, :], images)
  if cutout > 0:
    centre = jax.random.randint(k_cut, (b, 2), 0, jnp.array([h, w]))
    ys = jnp.arange(h)[None, :, None]
    xs = jnp.arange(w)[None, None, :]
    cy, cx = centre[:, 0, None, None], centre[:, 1, None, None]
    inside = ((ys >= cy - cutout // 2) & (ys < cy - cutout // 2 + cutout) &
              (xs >= cx - cutout // 2) & (xs < cx - cutout // 2 + cutout))
    images = jnp.where(inside[..., None], 0.0, images)
  return images


def standardize(images: jax.Array, mean: np.ndarray, std: np.ndarray) -> jax.Array:
  return (images - mean) / std


def epoch_batches(key: jax.Array, n: int, batch_size: int, epoch: int) -> np.ndarray:
  """Index batches ``[steps, batch_size]`` of one shuffled epoch (drop remainder).

  A pure function of ``(key, epoch)``: a resumed search draws the same order.
  """
  if batch_size > n:
    raise ValueError(f"batch_size {batch_size} is larger than the data ({n} examples)")
  perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
  steps = n // batch_size
  return perm[:steps * batch_size].reshape(steps, batch_size)


def iterate(split: Split, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Sequential batches over a whole split (the last one may be short)."""
  for i in range(0, len(split), batch_size):
    yield split.images[i:i + batch_size], split.labels[i:i + batch_size]
