"""XNAS search on the embedded digits data set (scikit-learn's 8x8 digits).

A small supernet (5 cells, 8 channels, XNAS op set) that searches in a few
minutes on two CPU cores, with XNAS's theory learning rates (eq. 4) per cell
type and L = 1:

  xnas-search --config configs/digits.py --workdir /tmp/xnas_digits
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  return config_defaults.base_config()
