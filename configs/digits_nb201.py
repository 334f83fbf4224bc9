"""XNAS search of NAS-Bench-201's cell on the embedded digits data set.

The NAS-Bench-201 space (``xnas_jax.spaces.nb201``): one cell of 4 states and
6 edges shared by every cell, 5 operations per edge (``none`` included), in
the release's network of three stages with residual blocks between them.
Small enough (C=8, 2 cells per stage) to search in about a minute on two CPU
cores, compile included:

  xnas-search --config configs/digits_nb201.py --workdir /tmp/xnas_digits_nb201
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.base_config()
  config.space = "nb201"
  config.op_set = "nb201"
  config.channels = 8
  config.num_cells = 2  # cells per stage: 6 searched cells
  return config
