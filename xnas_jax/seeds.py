"""Several independent searches as one: per-seed configs and the leading
seed axis of their stacked states."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

PyTree = Any


def seed_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One config per seed of a ``num_seeds``-seed run: seeds ``seed .. seed + K - 1``."""
  out = []
  for k in range(config.get("num_seeds", 1)):
    c = config.copy_and_resolve_references()
    c.seed = config.seed + k
    out.append(c)
  return out


def stack(trees: list[PyTree]) -> PyTree:
  """Trees of one structure -> one tree with a leading seed axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: PyTree, k: int) -> PyTree:
  """Seed ``k``'s tree of a stacked one."""
  return jax.tree.map(lambda x: x[k], tree)
