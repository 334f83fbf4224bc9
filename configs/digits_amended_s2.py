"""Bi et al.'s space S2 (sec. 4.1.3) on the embedded digits data set: fixed
edges (node j fed by the first cell input and the previous state), two
operations per edge (``skip_connect``, ``sep_conv_3x3``), and an architecture
per cell (``arch_sharing="cell"``: no cell shares its architecture), searched
with DARTS's Adam and the amended gradient (Bi et al. eq. 6-7).

  xnas-search --config configs/digits_amended_s2.py --workdir /tmp/amended_s2

``experiments/amended_s2.py`` compares it with the first-order gradient.
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.base_config()
  config.op_set = "s2"
  config.topology = "fixed"
  config.arch_sharing = "cell"
  config.arch_optimizer.name = "darts_adam"
  config.arch_gradient = "amended"
  return config
