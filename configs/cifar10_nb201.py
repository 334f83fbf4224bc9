"""DARTS on NAS-Bench-201 with CIFAR-10, as DARTS-PT's release searches it
(ruocwang/darts-pt ``nasbench201/train_search.py``, its defaults): first-order
DARTS, C=16 and N=5 cells per stage, batch 64, 100 epochs, SGD with momentum
0.9 from 0.025 on a cosine schedule to 0.001, weight decay 3e-4, gradient
clipping 5; Adam 3e-4 with betas (0.5, 0.999) and weight decay 1e-3 on the
architecture; half of the training set for the weights, half for the
architecture; pad-4 crop and flip.  Perturbation selection as its
``projection.py``: one operation per edge (none included), 5 tuning epochs
between decisions.

  xnas-search --config configs/cifar10_nb201.py --workdir /tmp/nb201_cifar10

Needs the data prepared by tensorflow-datasets (set TFDS_DATA_DIR).
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.base_config()
  config.dataset = "cifar10"
  config.space = "nb201"
  config.op_set = "nb201"
  config.channels = 16
  config.num_cells = 5
  config.batch_size = 64
  config.epochs = 100
  config.augment = ml_collections.ConfigDict({"pad": 4, "flip": True})
  config.arch_optimizer.name = "darts_adam"
  config.selection = "perturbation"
  config.pt.tune_epochs = 5
  return config
