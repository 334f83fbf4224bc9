"""The XNAS paper's CIFAR-10 search (sec. 4.1): 8 cells, 16 channels, batch 96,
50 epochs, a 50/50 split of the training set, XNAS with the theory's rates.

  xnas-search --config configs/cifar10_xnas.py --workdir /tmp/xnas_cifar10

Needs the data prepared by tensorflow-datasets (set TFDS_DATA_DIR).
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.base_config()
  config.dataset = "cifar10"
  config.op_set = "xnas"
  config.channels = 16
  config.num_cells = 8
  config.batch_size = 96
  config.epochs = 50
  config.augment = ml_collections.ConfigDict({"pad": 4, "flip": True})
  return config
