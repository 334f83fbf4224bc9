"""DARTS first order on CIFAR-10 (Liu et al., 2019): the 8-op space, 8 cells,
16 channels, batch 64, 50 epochs, Adam 3e-4 with betas (0.5, 0.999) and
weight decay 1e-3 on the architecture logits.

  xnas-search --config configs/cifar10_darts.py --workdir /tmp/darts_cifar10

Needs the data prepared by tensorflow-datasets (set TFDS_DATA_DIR).
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.base_config()
  config.dataset = "cifar10"
  config.op_set = "darts"
  config.channels = 16
  config.num_cells = 8
  config.batch_size = 64
  config.epochs = 50
  config.augment = ml_collections.ConfigDict({"pad": 4, "flip": True})
  config.arch_optimizer.name = "darts_adam"
  return config
