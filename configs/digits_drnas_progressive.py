"""DrNAS's progressive search on digits (the release's DARTS-space
``train_search.py``, scaled to digits): the DARTS op set, Dirichlet mixture
weights, partial channels K = 6 without edge normalization for the first half
of the epochs, then every edge pruned to its 4 strongest operations and the
partial channels widened to K = 4 (``xnas_jax.progressive``).  12 channels,
so that both 6 and 4 divide them.

  xnas-search --config configs/digits_drnas_progressive.py --workdir /tmp/drnas_pc
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.base_config()
  config.op_set = "darts"
  config.channels = 12
  config.epochs = 6
  config.arch_optimizer.name = "drnas"
  config.partial_channels = 6
  config.edge_norm = False  # DrNAS's partial channels have no edge normalization
  config.progressive.enabled = True
  config.progressive.partial_channels = 4
  config.progressive.keep_ops = 4
  return config
