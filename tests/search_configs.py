"""Small search configurations shared by the end-to-end tests."""
from xnas_jax import config_defaults


def tiny_config(**overrides):
  c = config_defaults.base_config()
  c.channels, c.num_cells, c.batch_size, c.epochs, c.limit = 4, 3, 16, 2, 96
  c.num_devices = 1  # tests/test_parallel.py covers 8
  for k, v in overrides.items():
    c[k] = v
  return c


def wiping_config(rebuild_wiped=True):
  """zeta -> 0 closes the wipeout gap: after one step a single expert per edge
  survives, so some ops are wiped on every edge and the search rebuilds."""
  c = tiny_config(rebuild_wiped=rebuild_wiped)
  c.arch_optimizer.zeta = 1e-6
  return c
