"""Discretization of architecture weights into a genotype, and its JSON form.

Magnitude selection (DARTS sec. 2.4; XNAS sec. 2.1): for every intermediate
node keep the two strongest incoming edges, where the strength of an edge is
``max_i u_i`` over its experts other than ``none``; replace each kept edge by
its strongest expert other than ``none``.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from xnas_jax.search_space import CELL_TYPES, NUM_INPUTS, NUM_NODES, SearchSpace

Edge = tuple[str, int]  # (operation, source state index)


@dataclasses.dataclass(frozen=True)
class Genotype:
  """A discrete cell pair in the DARTS form.

  ``normal`` and ``reduce`` list two ``(op, src)`` pairs per node, node by
  node; ``src`` indexes the states (0, 1 = cell inputs, 2.. = nodes).
  """
  normal: tuple[Edge, ...]
  normal_concat: tuple[int, ...]
  reduce: tuple[Edge, ...]
  reduce_concat: tuple[int, ...]

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  def to_dict(self) -> dict[str, Any]:
    return {
        "normal": [list(e) for e in self.normal],
        "normal_concat": list(self.normal_concat),
        "reduce": [list(e) for e in self.reduce],
        "reduce_concat": list(self.reduce_concat),
    }

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Genotype":
    try:
      return cls(
          normal=tuple((str(o), int(s)) for o, s in d["normal"]),
          normal_concat=tuple(int(i) for i in d["normal_concat"]),
          reduce=tuple((str(o), int(s)) for o, s in d["reduce"]),
          reduce_concat=tuple(int(i) for i in d["reduce_concat"]),
      )
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"not a genotype: {e!r}") from None

  @classmethod
  def from_json(cls, text: str) -> "Genotype":
    return cls.from_dict(json.loads(text))

  def edges(self, cell_type: str) -> tuple[Edge, ...]:
    return self.normal if cell_type == "normal" else self.reduce


def _strongest(weights: np.ndarray, ops: Sequence[str], alive: np.ndarray) -> tuple[int, float]:
  """Index and weight of the strongest live expert other than ``none``."""
  best, best_w = -1, -np.inf
  for i, name in enumerate(ops):
    if name == "none" or not alive[i]:
      continue
    if weights[i] > best_w:
      best, best_w = i, float(weights[i])
  return best, best_w


def discretize_cell(weights: np.ndarray, space: SearchSpace, alive: np.ndarray | None = None,
                    edges_per_node: int = 2) -> tuple[Edge, ...]:
  """Magnitude selection for one cell type.

  Args:
    weights: ``[num_edges, num_ops]`` mixture weights ``u`` (or any monotone
      function of them, such as logits).
    space: the search space (edge list and op names).
    alive: ``[num_edges, num_ops]`` bool of experts not wiped out; a wiped
      expert is never chosen.
    edges_per_node: incoming edges kept per node (2 in DARTS).

  Returns:
    ``(op, src)`` pairs, ``edges_per_node`` per node, nodes in order.
  """
  weights = np.asarray(weights, dtype=np.float64)
  if alive is None:
    alive = np.ones(weights.shape, bool)
  alive = np.asarray(alive, bool)
  out: list[Edge] = []
  for j in range(NUM_NODES):
    dst = NUM_INPUTS + j
    cands = []
    for k in space.incoming(dst):
      i, w = _strongest(weights[k], space.ops, alive[k])
      if i >= 0:
        cands.append((w, space.edges[k][0], space.ops[i]))
    # Strongest first; ties broken by the lower source index (stable sort).
    cands.sort(key=lambda c: -c[0])
    kept = sorted(cands[:edges_per_node], key=lambda c: c[1])
    out.extend((op, src) for _, src, op in kept)
  return tuple(out)


def discretize(weights: dict[str, np.ndarray], space: SearchSpace,
               alive: dict[str, np.ndarray] | None = None) -> Genotype:
  """Magnitude selection of both cell types; see ``discretize_cell``."""
  cells = {}
  for t in CELL_TYPES:
    a = None if alive is None else np.asarray(alive[t], bool)
    if a is None:
      a = space.available_mask(t)
    else:
      a = a & space.available_mask(t)
    cells[t] = discretize_cell(np.asarray(weights[t]), space, a)
  concat = tuple(range(NUM_INPUTS, NUM_INPUTS + NUM_NODES))
  return Genotype(cells["normal"], concat, cells["reduce"], concat)


def cell_depth(edges: Sequence[Edge]) -> float:
  """The XNAS cell-depth metric: mean source index of the kept edges.

  Inputs are indexed 0 and 1 and node ``j`` is ``j + 2``; a deeper cell
  (more node-to-node edges) scores higher.
  """
  if not edges:
    raise ValueError("cell_depth of an empty edge list")
  return float(np.mean([src for _, src in edges]))
