"""Discretization of architecture weights into a genotype, and its JSON form.

Magnitude selection (DARTS sec. 2.4; XNAS sec. 2.1): for every intermediate
node keep the two strongest incoming edges, where the strength of an edge is
``max_i u_i`` over its live experts other than ``none`` and ``u`` is XNAS
eq. 1's normalization over all experts; replace each kept edge by its
strongest live expert other than ``none``.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Sequence

import numpy as np

from xnas_jax.search_space import SearchSpace

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
  num_inputs: ClassVar[int] = 2  # the two previous cells' outputs
  num_nodes: ClassVar[int] = 4  # the DARTS cell's intermediate nodes

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

  def layer(self, i: int, reduction: bool) -> tuple[tuple[Edge, ...], tuple[int, ...]]:
    """The edges and concat of layer ``i`` (a reduction cell or not)."""
    t = "reduce" if reduction else "normal"
    return self.edges(t), self.concat(t)

  def concat(self, cell_type: str) -> tuple[int, ...]:
    return self.normal_concat if cell_type == "normal" else self.reduce_concat

  def nodes(self, cell_type: str) -> tuple[tuple[Edge, ...], ...]:
    return _nodes(self.edges(cell_type), self.num_nodes)

  def kept_edges(self, cell_type: str) -> dict[tuple[int, int], str]:
    return _kept_edges(self.nodes(cell_type), self.num_inputs)

  def ops(self) -> tuple[str, ...]:
    """The operation of every edge of both cells."""
    return tuple(op for op, _ in self.normal + self.reduce)


def _nodes(edges: Sequence[Edge], num_nodes: int) -> tuple[tuple[Edge, ...], ...]:
  """A cell's edges split per node (the same number for every node)."""
  per_node = max(len(edges) // max(num_nodes, 1), 1)
  return tuple(tuple(edges[k:k + per_node]) for k in range(0, len(edges), per_node))


def _kept_edges(nodes: Sequence[Sequence[Edge]], num_inputs: int) -> dict[tuple[int, int], str]:
  """``(src, dst) -> op`` of a cell's edges, node ``j`` being state ``num_inputs + j``."""
  return {(src, num_inputs + j): op for j, node in enumerate(nodes) for op, src in node}


@dataclasses.dataclass(frozen=True)
class CellsGenotype:
  """One discrete DARTS cell per layer: an architecture per cell (Bi et al.'s
  S2), in layer order; each cell lists its ``(op, src)`` edges node by node,
  and every cell concatenates the nodes ``concat``."""
  cells: tuple[tuple[Edge, ...], ...]
  concat: tuple[int, ...] = (2, 3, 4, 5)
  num_inputs: ClassVar[int] = 2
  num_nodes: ClassVar[int] = 4

  def to_dict(self) -> dict[str, Any]:
    return {"cells": [[list(e) for e in cell] for cell in self.cells],
            "concat": list(self.concat)}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "CellsGenotype":
    try:
      cells = tuple(tuple((str(o), int(s)) for o, s in cell) for cell in d["cells"])
      concat = tuple(int(i) for i in d.get("concat", (2, 3, 4, 5)))
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"not a genotype of one cell per layer: {e!r}") from None
    if not cells:
      raise ValueError("not a genotype of one cell per layer: 'cells' is empty")
    return cls(cells, concat)

  def layer(self, i: int) -> tuple[tuple[Edge, ...], tuple[int, ...]]:
    """Cell ``i``'s edges and concat."""
    return self.cells[i], self.concat

  def nodes(self, cell_type: str) -> tuple[tuple[Edge, ...], ...]:
    """Per node, the edges of cell ``f"cell{i}"``."""
    return _nodes(self.cells[int(cell_type.removeprefix("cell"))], self.num_nodes)

  def kept_edges(self, cell_type: str) -> dict[tuple[int, int], str]:
    return _kept_edges(self.nodes(cell_type), self.num_inputs)

  def ops(self) -> tuple[str, ...]:
    return tuple(op for cell in self.cells for op, _ in cell)


def _strongest(weights: np.ndarray, ops: Sequence[str], alive: np.ndarray) -> int:
  """Index of the strongest expert other than ``none`` among ``alive`` (-1: none);
  ties go to the lower index."""
  best = -1
  for i, name in enumerate(ops):
    if name != "none" and alive[i] and (best < 0 or weights[i] > weights[best]):
      best = i
  return best


def discretize_cell(weights: np.ndarray, space: SearchSpace, alive: np.ndarray | None = None,
                    edges_per_node: int = 2, available: np.ndarray | None = None,
                    notes: list[str] | None = None, cell_type: str = "",
                    edge_weights: np.ndarray | None = None) -> tuple[Edge, ...]:
  """Magnitude selection for one cell type.

  The strength of an edge is ``max_i u_i`` over its live experts other than
  ``none`` (XNAS sec. 2.1: "the strength of an edge is defined as max_i u_i"),
  with ``u_i = v_i / sum_{l=1..N} v_l`` normalized over *all* N experts of the
  forecaster (XNAS eq. 1), a wiped expert keeping the weight ``v`` it had when
  it was wiped (Alg. 1 updates only ``i in I_{t-1}``).  Normalizing over the
  live experts instead would give every edge strength 1 once the final
  wipeout at ``t = T`` leaves one expert per edge, and the topology would be
  decided by edge order.

  Every node gets ``edges_per_node`` inputs.  An edge on which only ``none``
  survived ranks after every edge with a live operation; if such an edge must
  be kept (the node has too few others), its strongest operation other than
  ``none`` by ``u`` is taken and a note says so.  Exact ties in strength at
  the cut, or between the strongest experts of a kept edge, are broken by the
  lower source (op) index and reported in ``notes``.

  Args:
    weights: ``[num_edges, num_ops]`` mixture weights ``u`` of eq. 1 (or any
      monotone function of them shared by all edges, such as logits).
    space: the search space (edge list and op names).
    alive: ``[num_edges, num_ops]`` bool of experts not wiped out.
    edges_per_node: incoming edges kept per node (2 in DARTS).
    available: ``[num_edges, num_ops]`` bool of the experts the space has
      (default: all); the fallback for a ``none``-only edge picks among them.
    notes: if given, receives one line per fallback or tie.
    cell_type: names the cell in the notes and errors.
    edge_weights: ``[num_edges]`` PC-DARTS edge weights ``w`` (sec. 3.2): the
      strength of edge ``k`` is then ``w_k max_i u_i`` (its release's
      ``genotype()``: ``W[j, :] *= W2[j]``); the op chosen on an edge does
      not depend on them.

  Returns:
    ``(op, src)`` pairs, ``edges_per_node`` per node, nodes in order.
  """
  weights = np.asarray(weights, dtype=np.float64)
  available = np.ones(weights.shape, bool) if available is None else np.asarray(available, bool)
  alive = available if alive is None else np.asarray(alive, bool) & available
  notes = [] if notes is None else notes
  scale = (np.ones(weights.shape[0]) if edge_weights is None
           else np.asarray(edge_weights, np.float64))
  where = f"{cell_type} cell " if cell_type else ""
  out: list[Edge] = []
  for dst in space.nodes:
    cands = []  # (rank key, src, op index, edge)
    for k in space.incoming(dst):
      i = _strongest(weights[k], space.ops, alive[k])
      live = i >= 0
      if not live:
        i = _strongest(weights[k], space.ops, available[k])
      if i >= 0:
        cands.append(((live, scale[k] * weights[k, i]), space.edges[k][0], i, k))
    if len(cands) < edges_per_node:
      raise ValueError(f"node {dst} of the {where}has {len(cands)} incoming edges with an "
                       f"operation other than 'none'; {edges_per_node} are needed")
    # Strongest first; ties broken by the lower source index (stable sort).
    cands.sort(key=lambda c: (not c[0][0], -c[0][1]))
    kept = cands[:edges_per_node]
    if len(cands) > edges_per_node and cands[edges_per_node - 1][0] == cands[edges_per_node][0]:
      notes.append(f"tie: node {dst} of the {where}edges from {cands[edges_per_node - 1][1]} and "
                   f"{cands[edges_per_node][1]} are equally strong; kept the lower source")
    for key, src, i, k in kept:
      if not key[0]:
        notes.append(f"node {dst} of the {where}edge from {src}: only 'none' survived; kept "
                     f"its strongest other operation {space.ops[i]} to give the node "
                     f"{edges_per_node} inputs")
      elif np.sum(alive[k] & (weights[k] == weights[k, i])
                  & np.array([o != "none" for o in space.ops])) > 1:
        notes.append(f"tie: node {dst} of the {where}edge from {src}: several operations share "
                     f"the largest weight; kept {space.ops[i]}")
    out.extend((space.ops[i], src) for _, src, i, _ in sorted(kept, key=lambda c: c[1]))
  return tuple(out)


def discretize(weights: dict[str, np.ndarray], space: SearchSpace,
               alive: dict[str, np.ndarray] | None = None,
               notes: list[str] | None = None,
               edge_weights: dict[str, np.ndarray] | None = None) -> "Genotype | CellsGenotype":
  """Magnitude selection of both cell types; see ``discretize_cell``."""
  cells = {}
  for t in space.cell_types:
    a = None if alive is None else np.asarray(alive[t], bool)
    cells[t] = discretize_cell(np.asarray(weights[t]), space, a,
                               available=space.available_mask(t), notes=notes, cell_type=t,
                               edge_weights=None if edge_weights is None else edge_weights[t])
  return from_cells(space, cells)


def from_cells(space: SearchSpace, cells: dict[str, Sequence[Edge]]
               ) -> "Genotype | CellsGenotype":
  """The DARTS-form genotype of a normal and a reduction cell's kept edges
  (or, with an architecture per cell, of every cell's), every node of the
  space concatenated into the cell's output."""
  concat = space.nodes
  if "normal" not in space.cell_types:
    return CellsGenotype(tuple(tuple(cells[t]) for t in space.cell_types), concat)
  return Genotype(tuple(cells["normal"]), concat, tuple(cells["reduce"]), concat)


def cell_depth(edges: Sequence[Edge]) -> float:
  """The XNAS cell-depth metric: mean source index of the kept edges.

  Inputs are indexed 0 and 1 and node ``j`` is ``j + 2``; a deeper cell
  (more node-to-node edges) scores higher.
  """
  if not edges:
    raise ValueError("cell_depth of an empty edge list")
  return float(np.mean([src for _, src in edges]))
