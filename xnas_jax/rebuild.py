"""Rebuilding the supernet without the experts XNAS has wiped everywhere.

Between rebuilds a wiped expert is skipped by ``lax.cond`` on the dynamic
mask, so it costs no convolution, but its parameters, optimizer slots and the
cond itself stay in the program.  When an operation is wiped on *every* edge
of a cell type, the search can drop it from the compiled structure
(``Supernet.active_ops``) at the next epoch boundary: one compilation buys a
smaller program for the rest of the search (XNAS sec. 3.2: "wiped-out experts
no longer cost compute").  The architecture weights and the wipeout state keep
their full ``[edges, ops]`` shape; only the network's parameter, batch-
statistics and weight-optimizer trees lose the dropped operations' subtrees.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from xnas_jax.supernet import Supernet

PyTree = Any
ActiveOps = tuple[tuple[str, ...], ...]  # per cell type, in the space's order


def surviving_ops(net: Supernet, masks: Mapping[str, Any]) -> ActiveOps:
  """Per cell type, the built ops still live on at least one edge (of any
  seed, when the masks have leading seed axes)."""
  out = []
  for t in net.space.cell_types:
    m = np.asarray(masks[t])
    live_anywhere = m.reshape(-1, m.shape[-1]).any(axis=0)
    out.append(tuple(op for op in net.built_ops(t) if live_anywhere[net.space.ops.index(op)]))
  return tuple(out)


def dropped_ops(net: Supernet, active_ops: ActiveOps) -> dict[str, list[str]]:
  """Per cell type, the ops ``net`` builds that ``active_ops`` drops."""
  return {t: [op for op in net.built_ops(t) if op not in active_ops[i]]
          for i, t in enumerate(net.space.cell_types)}


def carry_over(tree: PyTree, target: PyTree) -> PyTree:
  """The leaves of ``tree`` at the paths of ``target`` (a sub-structure of it).

  Used to move parameters and optimizer slots into the rebuilt network's
  smaller tree; raises ``KeyError`` naming a path ``tree`` lacks.
  """
  leaves = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

  def take(path, _):
    name = jax.tree_util.keystr(path)
    if name not in leaves:
      raise KeyError(f"rebuild: the old tree has no leaf at {name}")
    return leaves[name]
  return jax.tree_util.tree_map_with_path(take, target)
