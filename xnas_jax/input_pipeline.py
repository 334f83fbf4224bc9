"""Data: the embedded digits set, TFDS image sets, the user's own images,
splits, augmentation.

A user's data set is named in the config as ``folder:/path/to/dir`` (class
folders of image files, the layout ``tfds.folder_dataset.ImageFolder``
reads: ``dir/<class>/<image>``, or ``dir/train/<class>/<image>`` with an
optional ``dir/test/<class>/<image>``; decoded with Pillow, no TensorFlow)
or ``npz:/path/to/file.npz`` (arrays ``images`` ``[n, H, W]`` or
``[n, H, W, C]``, uint8 in 0-255 or floats in [0, 1], and integer
``labels`` ``[n]`` in ``0..K-1``; optionally ``test_images`` and
``test_labels``).  Without a test split, one is held out as for digits.

Every data set is loaded whole into NumPy arrays (images NHWC float32 in
[0, 1], integer labels); searches on CIFAR-sized data keep them on the device
and gather batches inside the jitted step, so no batch crosses from the host
per step.  Augmentation is a pure function of a ``jax.random`` key.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

TFDS_NAMES = ("cifar10", "cifar100", "svhn_cropped", "fashion_mnist")
SYNTHETIC = {"synthetic_cifar10": ((32, 32, 3), 10, 2048)}  # shape, classes, size
DATASETS = ("digits",) + TFDS_NAMES + tuple(SYNTHETIC)
USER_KINDS = ("folder", "npz")  # dataset = "<kind>:<path>"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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


class DataError(ValueError):
  """A user's data set that cannot be read as images and labels (one line)."""


def dataset_error(name: str) -> str | None:
  """Why ``name`` is not a data set name (None: it is one)."""
  kind, sep, path = name.partition(":")
  if sep and kind in USER_KINDS:
    return None if path else f"dataset {name!r} names no path (expected {kind}:/path)"
  if name in DATASETS:
    return None
  return (f"unknown dataset {name!r}; expected one of {list(DATASETS)}, "
          f"folder:/path/to/class_folders or npz:/path/to/file.npz")


def _check(images: np.ndarray, labels: np.ndarray, where: str) -> Split:
  """A Split of ``images`` (uint8 or floats, NHW or NHWC) and ``labels``."""
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or len(images) == 0:
    raise DataError(f"{where}: images must be [n, H, W] or [n, H, W, C] with n > 0, "
                    f"got shape {images.shape}")
  if labels.shape != (len(images),):
    raise DataError(f"{where}: labels must be [n] = [{len(images)}], got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
    raise DataError(f"{where}: labels must be integers >= 0, got {labels.dtype} "
                    f"from {labels.min()}")
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  elif np.issubdtype(images.dtype, np.floating):
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
      raise DataError(f"{where}: images hold non-finite values")
  else:
    raise DataError(f"{where}: images must be uint8 or floats, got {images.dtype}")
  return Split(images, labels.astype(np.int32))


def load_npz(path: str) -> tuple[Split, Split | None, int]:
  """``images``/``labels`` (and optional ``test_images``/``test_labels``) of
  an ``.npz`` file; the classes are ``0..max label``."""
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise DataError(f"cannot read npz:{path}: {str(e).splitlines()[0]}") from None
  missing = {"images", "labels"} - set(arrays)
  if missing:
    raise DataError(f"npz:{path} has no {sorted(missing)} array (it has {sorted(arrays)})")
  train = _check(arrays["images"], arrays["labels"], f"npz:{path}")
  test = None
  if "test_images" in arrays or "test_labels" in arrays:
    if not {"test_images", "test_labels"} <= set(arrays):
      raise DataError(f"npz:{path} has only one of test_images and test_labels")
    test = _check(arrays["test_images"], arrays["test_labels"], f"npz:{path} (test)")
    if test.images.shape[1:] != train.images.shape[1:]:
      raise DataError(f"npz:{path}: test images are {test.images.shape[1:]}, "
                      f"training images {train.images.shape[1:]}")
  num_classes = int(max(train.labels.max(), -1 if test is None else test.labels.max())) + 1
  warning = missing_classes_warning(f"npz:{path}", train.labels, num_classes)
  if warning:
    print(f"warning: {warning}", file=sys.stderr)
  return train, test, num_classes


def missing_classes_warning(where: str, labels: np.ndarray, num_classes: int) -> str | None:
  """One line when the labels leave classes of ``0..num_classes-1`` without
  an example (labels 100-109 make a 110-class network with 100 empty
  classes): the labels are used as they are, so the line says how many
  classes are present against how many the network gets."""
  present = np.unique(labels)
  if len(present) == num_classes:
    return None
  shown = (f"{present[0]}..{present[-1]}" if len(present) > 6
           else ", ".join(str(int(v)) for v in present))
  return (f"{where}: the training labels take {len(present)} values ({shown}) but the network "
          f"gets {num_classes} classes (0..{num_classes - 1}), {num_classes - len(present)} of "
          f"them without an example; relabel them 0..{len(present) - 1} if that is not meant")


def _read_class_folders(root: str, classes: list[str] | None = None) -> tuple[Split, list[str]]:
  """Every image under ``root/<class>/``, labelled by its class folder's
  place in ``classes`` (default: the sorted folder names)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  classes = classes or found
  unknown = sorted(set(found) - set(classes))
  if unknown:
    raise DataError(f"folder {root} has class folders {unknown} that the training split lacks")
  images, labels, first = [], [], None
  for label, name in enumerate(classes):
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
      continue
    for file in sorted(os.listdir(folder)):
      if not file.lower().endswith(IMAGE_SUFFIXES):
        continue
      path = os.path.join(folder, file)
      try:
        with Image.open(path) as im:
          mode = "L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB"
          array = np.asarray(im.convert(mode))
      except OSError as e:
        raise DataError(f"cannot read image {path}: {str(e).splitlines()[0]}") from None
      if first is None:
        first = (path, array.shape)
      elif array.shape[:2] != first[1][:2]:
        raise DataError(f"images differ in size: {first[0]} is {first[1][1]}x{first[1][0]}, "
                        f"{path} is {array.shape[1]}x{array.shape[0]} (resize them to one size)")
      images.append(array)
      labels.append(label)
  if not images:
    raise DataError(f"folder {root} has no images in class folders "
                    f"({', '.join(IMAGE_SUFFIXES)})")
  if any(a.ndim == 3 for a in images):  # any colour image: all as RGB
    images = [np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a for a in images]
  return _check(np.stack(images), np.asarray(labels), f"folder:{root}"), classes


def _same_channels(split: Split, channels: int = 1) -> Split:
  """Grey images as RGB when the other split is in colour."""
  if split.images.shape[-1] == 1 and channels == 3:
    return Split(np.repeat(split.images, 3, axis=-1), split.labels)
  return split


def load_folder(root: str) -> tuple[Split, Split | None, int]:
  """Class folders of images under ``root`` (or ``root/train`` and
  ``root/test``, ImageFolder's split layout)."""
  if not os.path.isdir(root):
    raise DataError(f"folder:{root} is not a directory")
  if os.path.isdir(os.path.join(root, "train")):
    train, classes = _read_class_folders(os.path.join(root, "train"))
    test = None
    if os.path.isdir(os.path.join(root, "test")):
      test, _ = _read_class_folders(os.path.join(root, "test"), classes)
      test = _same_channels(test, train.images.shape[-1])
      train = _same_channels(train, test.images.shape[-1])
      if test.images.shape[1:] != train.images.shape[1:]:
        raise DataError(f"folder:{root}: test images are {test.images.shape[1:]}, "
                        f"training images {train.images.shape[1:]}")
  else:
    train, classes = _read_class_folders(root)
    test = None
  return train, test, len(classes)


def load_user(name: str) -> tuple[Split, Split | None, int]:
  """The data set ``folder:<path>`` or ``npz:<path>``."""
  kind, _, path = name.partition(":")
  return (load_folder if kind == "folder" else load_npz)(os.path.expanduser(path))


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
    name: ``digits``, a TFDS name in ``TFDS_NAMES``, ``folder:<dir>`` or
      ``npz:<file>`` (see the module docstring).
    seed: seed of the permutation that makes the splits.
    limit: if positive, use only this many training images (smoke runs).
  """
  rng = np.random.default_rng(seed)
  error = dataset_error(name)
  if error:
    raise ValueError(error)
  test = None
  if name.partition(":")[0] in USER_KINDS and ":" in name:
    full, test, num_classes = load_user(name)
    if test is not None:
      train_all = _take(full, rng.permutation(len(full)))
  elif name == "digits" or name in SYNTHETIC:
    full, num_classes = load_digits() if name == "digits" else load_synthetic(name, seed)
  if name in TFDS_NAMES:
    train_all, test, num_classes = load_tfds(name, data_dir)
    train_all = _take(train_all, rng.permutation(len(train_all)))
  elif test is None:  # hold out a test split
    perm = rng.permutation(len(full))
    n_test = int(round(test_fraction * len(full)))
    test, train_all = _take(full, perm[:n_test]), _take(full, perm[n_test:])
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
