"""Bi et al.'s space S2 on CIFAR-10 (sec. 4.1.3): fixed edges, ``skip_connect``
and ``sep_conv_3x3``, an architecture per cell, and the network searched at
the depth it is retrained at (20 cells), with the amended gradient and
DARTS's search protocol otherwise (16 channels, batch 64, 50 epochs).

  xnas-search --config configs/cifar10_amended_s2.py --workdir /tmp/amended_s2_cifar10
  xnas-train --genotype /tmp/amended_s2_cifar10/genotype.json \
      --config configs/cifar10_eval.py --workdir /tmp/amended_s2_eval

Needs the data prepared by tensorflow-datasets (set TFDS_DATA_DIR).
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.base_config()
  config.dataset = "cifar10"
  config.op_set = "s2"
  config.topology = "fixed"
  config.arch_sharing = "cell"
  config.channels = 16
  config.num_cells = 20
  config.batch_size = 64
  config.epochs = 50
  config.augment = ml_collections.ConfigDict({"pad": 4, "flip": True})
  config.arch_optimizer.name = "darts_adam"
  config.arch_gradient = "amended"
  return config
