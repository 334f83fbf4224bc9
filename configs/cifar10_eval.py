"""The papers' CIFAR-10 evaluation (DARTS sec. 3.3; XNAS sec. 4.2, 9):
20 cells, 36 initial channels, batch 96, 600 epochs, SGD with Nesterov
momentum 0.9, learning rate 0.025 on a cosine schedule to 0, weight decay
3e-4, gradient clipping 5, auxiliary head weight 0.4, drop-path 0.2, cutout 16,
pad-4 crop and horizontal flip.  Label smoothing 0.1 as in XNAS's recipe
(DARTS has none; set 0 to reproduce it).  XNAS's own 1500 epochs with five
power-cosine cycles and AutoAugment are not reproduced here.

  xnas-train --genotype genotype.json --config configs/cifar10_eval.py --workdir DIR
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.eval_config()
  config.dataset = "cifar10"
  config.channels = 36
  config.num_cells = 20
  config.batch_size = 96
  config.epochs = 600
  config.augment = ml_collections.ConfigDict({"pad": 4, "flip": True, "cutout": 16})
  return config
