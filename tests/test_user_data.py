"""The user's own data: class folders of image files and .npz arrays, read
offline, searched on and retrained on; clear one-line errors for what cannot
be read or is too small."""
import os

import numpy as np
import pytest
from PIL import Image

from search_configs import FEW_OPS, tiny_config
from xnas_jax import config_defaults
from xnas_jax import input_pipeline
from xnas_jax import retrain
from xnas_jax import search_space
from xnas_jax import train
from xnas_jax.genotype import Genotype

DataError = input_pipeline.DataError


def _pattern(label, h, w, rng):
  """A learnable picture: a bright bar whose row depends on the class."""
  img = rng.random((h, w)) * 0.3
  img[(label * 3) % h: (label * 3) % h + 2, :] = 1.0
  return img


def _write_folder(root, classes=3, per_class=30, size=(20, 28), mode="L", seed=0):
  """``root/<class>/<i>.png`` images of ``size`` = (width, height)."""
  rng = np.random.default_rng(seed)
  w, h = size
  for c in range(classes):
    os.makedirs(os.path.join(root, f"class_{c}"), exist_ok=True)
    for i in range(per_class):
      grey = (_pattern(c, h, w, rng) * 255).astype(np.uint8)
      im = Image.fromarray(grey, "L").convert(mode)
      im.save(os.path.join(root, f"class_{c}", f"{i}.png"))
  return root


def test_a_folder_of_grey_non_square_images_is_searched_end_to_end(tmp_path):
  root = _write_folder(str(tmp_path / "images"))
  data = input_pipeline.load_search_data(f"folder:{root}", 0)
  assert data.image_shape == (28, 20, 1) and data.num_classes == 3
  assert len(data.train) + len(data.val) + len(data.test) == 90
  # The pixels are the files' own (PNG is lossless), scaled to [0, 1].
  first = np.asarray(Image.open(os.path.join(root, "class_0", "0.png")), np.float32) / 255
  every = np.concatenate([data.train.images, data.val.images, data.test.images])[..., 0]
  assert any(np.array_equal(first, im) for im in every)
  c = tiny_config(dataset=f"folder:{root}", epochs=1, limit=0, op_set=FEW_OPS)  # the data's test
  result = train.train_and_evaluate(c, str(tmp_path / "search"), progress=False)
  assert len(result["genotype"].normal) == 8
  assert np.isfinite(result["summary"]["train_loss"])


def _npz(path, n=120, classes=100, shape=(12, 16, 3), seed=0, **extra):
  rng = np.random.default_rng(seed)
  images = (rng.random((n,) + shape) * 255).astype(np.uint8)
  labels = np.arange(n) % classes
  np.savez(path, images=images, labels=labels, **extra)
  return images, labels


def test_an_npz_of_colour_images_with_100_classes_retrains_end_to_end(tmp_path):
  path = str(tmp_path / "data.npz")
  images, _ = _npz(path)
  data = input_pipeline.load_search_data(f"npz:{path}", 0)
  assert data.image_shape == (12, 16, 3) and data.num_classes == 100
  np.testing.assert_allclose(np.sort(np.concatenate(
      [data.train.images, data.val.images, data.test.images]).ravel()),
      np.sort(images.ravel() / 255.0), rtol=1e-6)
  c = config_defaults.eval_config()
  c.dataset, c.channels, c.num_cells, c.batch_size, c.epochs = f"npz:{path}", 4, 3, 16, 1
  c.num_devices, c.figures = 1, False
  genotype = Genotype(tuple([("skip_connect", 0), ("sep_conv_3x3", 1)] * 4), (2, 3, 4, 5),
                      tuple([("max_pool_3x3", 0), ("skip_connect", 1)] * 4), (2, 3, 4, 5))
  summary = retrain.train_and_evaluate(c, genotype, str(tmp_path / "retrain"),
                                       progress=False)["summary"]
  assert 0.0 <= summary["test_acc"] <= 1.0 and np.isfinite(summary["train_loss"])


def test_imagefolder_split_layout_and_colour(tmp_path):
  """``dir/train/<class>`` and ``dir/test/<class>`` (tfds ImageFolder's
  layout); a colour image among grey ones makes them all RGB."""
  root = tmp_path / "split"
  _write_folder(str(root / "train"), classes=2, per_class=10, size=(8, 6))
  _write_folder(str(root / "test"), classes=2, per_class=4, size=(8, 6), seed=1)
  Image.new("RGB", (8, 6), (255, 0, 0)).save(root / "train" / "class_1" / "red.png")
  train_all, test, k = input_pipeline.load_folder(str(root))
  assert k == 2 and len(train_all) == 21 and len(test) == 8
  assert train_all.images.shape[1:] == (6, 8, 3)
  red = train_all.images[train_all.labels == 1]
  assert any(np.allclose(im[..., 0], 1) and np.allclose(im[..., 1:], 0) for im in red)
  data = input_pipeline.load_search_data(f"folder:{root}", 0)
  assert len(data.test) == 8  # the folder's own test split, not a held-out part


def test_unreadable_user_data_gives_one_line_naming_it(tmp_path):
  root = _write_folder(str(tmp_path / "mixed"), classes=2, per_class=2)
  Image.new("L", (9, 9)).save(os.path.join(root, "class_0", "odd.png"))
  cases = [
      (f"folder:{root}", "images differ in size"),
      (f"folder:{tmp_path / 'none'}", "is not a directory"),
      (f"npz:{tmp_path / 'none.npz'}", "cannot read npz:"),
  ]
  os.makedirs(tmp_path / "empty" / "a")
  cases.append((f"folder:{tmp_path / 'empty'}", "has no images in class folders"))
  np.savez(tmp_path / "x.npz", x=np.zeros(3))
  cases.append((f"npz:{tmp_path / 'x.npz'}", "has no ['images', 'labels'] array"))
  np.savez(tmp_path / "neg.npz", images=np.zeros((4, 8, 8)), labels=np.array([0, 1, -1, 2]))
  cases.append((f"npz:{tmp_path / 'neg.npz'}", "labels must be integers >= 0"))
  np.savez(tmp_path / "short.npz", images=np.zeros((4, 8, 8)), labels=np.array([0, 1]))
  cases.append((f"npz:{tmp_path / 'short.npz'}", "labels must be [n] = [4]"))
  for name, message in cases:
    with pytest.raises(DataError, match=None) as e:
      input_pipeline.load_search_data(name, 0)
    assert message in str(e.value) and "\n" not in str(e.value), (name, str(e.value))


def test_names_and_sizes_are_checked_before_a_run():
  assert input_pipeline.dataset_error("folder:/x") is None
  assert input_pipeline.dataset_error("npz:") == "dataset 'npz:' names no path (expected npz:/path)"
  assert "unknown dataset 'tiff:/x'" in input_pipeline.dataset_error("tiff:/x")
  assert search_space.image_size_error((28, 20, 1), 8) is None
  assert search_space.image_size_error((3, 20, 1), 8) == (
      "images of 3x20 pixels are too small for the 2 reduction cells of 8 cells (each halves "
      "the size): at least 4x4 (or fewer num_cells)")
  assert search_space.image_size_error((3, 3, 1), 2) is None  # no reduction cells


def test_images_too_small_for_the_network_are_refused(tmp_path):
  path = str(tmp_path / "tiny.npz")
  _npz(path, n=64, classes=2, shape=(3, 3))
  with pytest.raises(train.ConfigError, match="images of 3x3 pixels are too small"):
    train.train_and_evaluate(tiny_config(dataset=f"npz:{path}", limit=0), str(tmp_path / "w"),
                             progress=False)


def test_labels_that_leave_classes_empty_are_warned_in_one_line(tmp_path, capsys):
  """Labels 100-109 make a 110-class problem with 100 empty classes: the data
  load as they are, and one line on stderr says 10 classes are present of
  110; labels 0..K-1 give no warning."""
  path = tmp_path / "d.npz"
  images = np.zeros((20, 4, 4), np.uint8)
  np.savez(path, images=images, labels=np.arange(20) % 10 + 100)
  _, _, num_classes = input_pipeline.load_npz(str(path))
  err = capsys.readouterr().err.strip().splitlines()
  assert num_classes == 110
  assert len(err) == 1 and "take 10 values (100, 101" not in err[0]
  assert "10 values (100..109)" in err[0] and "110 classes" in err[0]
  np.savez(path, images=images, labels=np.arange(20) % 10)
  assert input_pipeline.load_npz(str(path))[2] == 10
  assert capsys.readouterr().err == ""
