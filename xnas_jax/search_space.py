"""Search spaces: operation sets and cell topologies.

A ``SearchSpace`` is the data of one cell: its input states, its nodes, its
edges and the experts on each edge, the cell types that own architecture
parameters, how many incoming edges a node keeps, and the family
(``xnas_jax.spaces``) that builds its networks and reads its genotypes.  Each
edge ``(src, dst)`` is a *forecaster* in the language of XNAS (sec. 2.1): it
mixes the predictions of its experts (the operations available on that edge).

This module defines the DARTS family's cells.  A DARTS cell has two input
states (the outputs of the two previous cells, indexed 0 and 1) and four
intermediate nodes (indexed 2..5).  Two topologies are provided:

* ``"darts"``: node ``j`` is fed by every earlier state (14 edges), as in
  DARTS and XNAS.
* ``"fixed"``: node ``j`` is fed by the first cell input and the previous
  state only (8 edges), as in the amended-gradient paper (Bi et al.).

Operation sets are named: ``darts``, ``xnas`` (no ``none``; the cell output is a
1x1 conv over the concatenated nodes), and the robustness spaces ``s1``..``s4``
of Zela et al. (2020).  ``s1`` has its own two operations per edge.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# The DARTS cell: two inputs, four nodes, two kept edges per node, a normal
# and a reduction cell type.
_DARTS_INPUTS = 2
_DARTS_NODES = 4
_DARTS_CELL_TYPES = ("normal", "reduce")

DARTS_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
XNAS_OPS: tuple[str, ...] = DARTS_OPS[1:]
ALL_OPS: tuple[str, ...] = DARTS_OPS + ("noise",)

# Space S1 of Zela et al. (2020), "Understanding and Robustifying
# Differentiable Architecture Search": the two operations DARTS ranked highest
# on each edge (edges in DARTS order), as released with that paper.
_S1_NORMAL = (
    ("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"), ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"), ("max_pool_3x3", "skip_connect"),
    ("skip_connect", "sep_conv_3x3"), ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"), ("skip_connect", "sep_conv_3x3"),
    ("max_pool_3x3", "skip_connect"), ("skip_connect", "dil_conv_3x3"),
    ("dil_conv_3x3", "dil_conv_5x5"), ("dil_conv_3x3", "dil_conv_5x5"),
)
_S1_REDUCE = (
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "dil_conv_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "sep_conv_3x3"), ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"), ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"), ("skip_connect", "dil_conv_5x5"),
)

OP_SETS: dict[str, tuple[str, ...]] = {
    "darts": DARTS_OPS,
    "xnas": XNAS_OPS,
    "s1": tuple(o for o in DARTS_OPS if o != "none"),
    "s2": ("skip_connect", "sep_conv_3x3"),
    "s3": ("none", "skip_connect", "sep_conv_3x3"),
    "s4": ("noise", "sep_conv_3x3"),
}
TOPOLOGIES = ("darts", "fixed")


def darts_edges() -> tuple[tuple[int, int], ...]:
  """Edges ``(src, dst)`` of the DARTS cell, in DARTS order (by node, then src)."""
  return tuple((src, _DARTS_INPUTS + j) for j in range(_DARTS_NODES)
               for src in range(_DARTS_INPUTS + j))


def fixed_edges() -> tuple[tuple[int, int], ...]:
  """Fixed-edge topology: node j is fed by input 0 and by state j+1."""
  return tuple(e for j in range(_DARTS_NODES)
               for e in ((0, _DARTS_INPUTS + j), (_DARTS_INPUTS + j - 1, _DARTS_INPUTS + j)))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A cell search space: the cell's states and edges, and the experts on each edge.

  Attributes:
    name: name of the operation set.
    ops: the operation names; expert ``i`` of every edge is ``ops[i]``.
    edges: ``(src, dst)`` state indices, in an order where every edge into
      node ``j`` comes before any edge out of it.
    available: per cell type (in ``cell_types`` order), a
      ``[num_edges, num_ops]`` tuple-of-tuples of bools: which experts exist
      on which edge (all, except in ``s1``).
    cell_output: ``"concat"`` (DARTS: the nodes concatenated), ``"conv1x1"``
      (XNAS: a 1x1 conv over them) or ``"last"`` (NAS-Bench-201, a user's
      model: the last node).
    topology: the name of the edge set (``"darts"``, ``"fixed"``, ``"complete"``,
      ``"model"``: one edge per label of a user's model).
    family: the ``xnas_jax.spaces`` family that builds the space's networks
      and reads and writes its genotypes.
    cell_types: the cell types that own architecture parameters; the keys
      of the architecture pytrees.
    num_inputs: input states of a cell (indexed ``0 .. num_inputs - 1``).
    num_nodes: intermediate nodes (indexed ``num_inputs ..``).
    kept_per_node: incoming edges a discrete cell keeps per node (DARTS: 2);
      0 keeps every edge (NAS-Bench-201, whose edges may choose ``none``).
  """
  name: str
  ops: tuple[str, ...]
  edges: tuple[tuple[int, int], ...]
  available: tuple[tuple[tuple[bool, ...], ...], ...]
  cell_output: str = "concat"
  topology: str = "darts"
  family: str = "darts"
  cell_types: tuple[str, ...] = _DARTS_CELL_TYPES
  num_inputs: int = _DARTS_INPUTS
  num_nodes: int = _DARTS_NODES
  kept_per_node: int = 2

  @property
  def num_edges(self) -> int:
    return len(self.edges)

  @property
  def num_ops(self) -> int:
    return len(self.ops)

  def available_mask(self, cell_type: str) -> np.ndarray:
    """``[num_edges, num_ops]`` bool array of the experts that exist."""
    return np.asarray(self.available[self.cell_types.index(cell_type)], dtype=bool)

  @property
  def nodes(self) -> tuple[int, ...]:
    """State indices of the intermediate nodes."""
    return tuple(range(self.num_inputs, self.num_inputs + self.num_nodes))

  @property
  def chooses_edges(self) -> bool:
    """Whether a discrete cell drops edges (some node has more incoming
    edges than it keeps)."""
    return self.kept_per_node > 0 and any(len(self.incoming(d)) > self.kept_per_node
                                          for d in self.nodes)

  def incoming(self, dst: int) -> list[int]:
    """Indices of the edges that feed state ``dst``."""
    return [k for k, (_, d) in enumerate(self.edges) if d == dst]


def get_search_space(op_set: str = "darts", topology: str = "darts") -> SearchSpace:
  """Returns the search space for a named op set and topology.

  Raises:
    ValueError: with a one-line message naming the bad value.
  """
  if op_set not in OP_SETS:
    raise ValueError(f"unknown op set {op_set!r}; expected one of {sorted(OP_SETS)}")
  if topology not in TOPOLOGIES:
    raise ValueError(f"unknown topology {topology!r}; expected one of {list(TOPOLOGIES)}")
  ops = OP_SETS[op_set]
  edges = darts_edges() if topology == "darts" else fixed_edges()
  if op_set == "s1":
    if topology != "darts":
      raise ValueError("op set 's1' is defined per edge of the 'darts' topology only")
    available = tuple(tuple(tuple(o in per_edge for o in ops) for per_edge in table)
                      for table in (_S1_NORMAL, _S1_REDUCE))
  else:
    row = tuple(True for _ in ops)
    available = (tuple(row for _ in edges),) * len(_DARTS_CELL_TYPES)
  return SearchSpace(
      name=op_set, ops=ops, edges=edges, available=available,
      cell_output="conv1x1" if op_set == "xnas" else "concat", topology=topology)


def per_cell(space: SearchSpace, num_cells: int) -> SearchSpace:
  """``space`` with an architecture per cell (Bi et al.'s S2): cell ``i`` of
  ``num_cells`` is its own cell type ``f"cell{i}"``, with the experts its
  normal or reduction cell type has."""
  reductions = reduction_layers(num_cells)
  available = tuple(space.available[space.cell_types.index("reduce" if i in reductions
                                                           else "normal")]
                    for i in range(num_cells))
  return dataclasses.replace(space, cell_types=tuple(f"cell{i}" for i in range(num_cells)),
                             available=available)


def reduction_layers(num_cells: int) -> tuple[int, ...]:
  """Indices of the reduction cells: at 1/3 and 2/3 of the depth (DARTS)."""
  if num_cells < 3:
    return ()
  return (num_cells // 3, 2 * num_cells // 3)


def image_size_error(image_shape: tuple[int, ...], num_cells: int) -> str | None:
  """Why images of ``image_shape`` (H, W, C) are too small for a network of
  ``num_cells`` cells (None: they are not).  Every reduction cell halves the
  height and width (rounding up); each must still have 2 pixels before the
  last reduction, so a side needs at least ``2 ** reductions`` pixels."""
  r = len(reduction_layers(num_cells))
  h, w = image_shape[:2]
  if min(h, w) < 2 ** r:
    return (f"images of {h}x{w} pixels are too small for the {r} reduction cells of "
            f"{num_cells} cells (each halves the size): at least {2 ** r}x{2 ** r} "
            f"(or fewer num_cells)")
  return None


def cell_counts(num_cells: int) -> dict[str, int]:
  """Number of replicas of each cell type (``r_c`` in XNAS sec. 3.1)."""
  r = len(reduction_layers(num_cells))
  return {"normal": num_cells - r, "reduce": r}


def validate_ops(names: Sequence[str]) -> None:
  for n in names:
    if n not in ALL_OPS:
      raise ValueError(f"unknown operation {n!r}; expected one of {list(ALL_OPS)}")
