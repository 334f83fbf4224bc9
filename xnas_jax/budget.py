"""Searching under a resource budget: what each expert costs, and the penalty
that keeps the expected cost of the found network within a target.

Costs are those of the *evaluation network* the found cells will be trained
in; each space family (``xnas_jax.spaces``) gives its own cost model, and
this module holds the DARTS family's and the penalty every family shares.
In the DARTS space that network is ``NetworkCIFAR`` (``xnas_jax.evalnet``: ``budget.channels`` = 36
and ``budget.num_cells`` = 20 by default, at the data's image size), so that a
target is in the units a paper reports:

* ``flops``: multiply-adds of the forward pass of one image, in millions.  A
  convolution over an ``Ho x Wo`` output costs ``k^2 C_in / groups * C_out *
  Ho * Wo``; pooling, identity, BN and ReLU are not counted (the convention
  of DARTS-family papers).  ``op_macs`` has the formula per operation.
* ``params``: trainable parameters in millions, the auxiliary head excluded
  (``evalnet.parameter_count``), from the operations' own variables.

``EdgeCosts`` holds, per cell type, the cost ``c[e, i]`` of expert ``i`` on
edge ``e`` summed over the evaluation network's cells of that type and
weighted by the chance ``2 / in-degree`` that magnitude selection keeps the
edge (two inputs per node), plus the fixed cost of the stem, the cells'
preprocessing and the classifier.  The expected cost of the network a
mixture ``u`` would give is ``fixed + sum_t sum_{e,i} u[t, e, i] c[t, e, i]``.

The penalty added to the architecture objective (mean-loss scale) is
``weight * (E_u[cost] / target - 1)_+``: its gradient w.r.t. ``u`` is
``weight * c / target`` while the expected cost is above the target, and 0
below it.  It enters each optimizer as a correction of its gradient
(``search_steps.arch_update``): the logit optimizers add its pull-back through
their mixture; XNAS adds it to every copy's loss gradient before the clip at
``L``, so each expert's reward becomes ``R_i - weight * c_i / target`` while
over budget, still bounded by ``L`` (Theorem 1's bound holds as it is stated
for any ``L``-bounded rewards).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xnas_jax import config_checks
from xnas_jax import evalnet
from xnas_jax import ops as ops_lib
from xnas_jax.genotype import Genotype
from xnas_jax.search_space import SearchSpace
from xnas_jax.search_space import reduction_layers

# The DARTS evaluation cell: two inputs, four concatenated nodes.
_INPUTS, _NODES = Genotype.num_inputs, Genotype.num_nodes

METRICS = ("none", "flops", "params")
RULES = (("budget.target", "nonnegative"), ("budget.weight", "nonnegative"),
         ("budget.channels", "positive_int"), ("budget.num_cells", "positive_int"))


def op_macs(name: str, channels: int, height: int, width: int, stride: int) -> int:
  """Multiply-adds of operation ``name`` (``channels`` -> ``channels``) on an
  ``height x width`` input with ``stride``."""
  ho, wo = math.ceil(height / stride), math.ceil(width / stride)
  hw, c = ho * wo, channels
  if name in ("sep_conv_3x3", "sep_conv_5x5"):  # (depthwise k x k + pointwise), twice
    k = int(name[-1])
    return 2 * (k * k * c * hw + c * c * hw)
  if name in ("dil_conv_3x3", "dil_conv_5x5"):  # depthwise k x k (dilated) + pointwise
    k = int(name[-1])
    return k * k * c * hw + c * c * hw
  if name == "skip_connect" and stride == 2:  # factorized reduce: two 1x1 convs to c / 2
    return 2 * c * (c // 2) * hw
  return 0  # pools, identity, none, noise


@functools.lru_cache(maxsize=None)
def op_params(name: str, channels: int, stride: int) -> int:
  """Trainable parameters of operation ``name`` in the evaluation network."""
  module = ops_lib.make_op(name, channels, stride, affine=True, pool_bn=False)
  x = jnp.zeros((1, 8, 8, channels))
  k = jax.random.key(0)
  shapes = jax.eval_shape(lambda: module.init({"params": k, "noise": k}, x, False))
  return evalnet.parameter_count(shapes.get("params", {}))


class CellPlan(NamedTuple):
  """One cell of the evaluation network: its type, channels and input size."""
  cell_type: str
  channels: int
  height: int
  width: int
  channels_prev_prev: int
  channels_prev: int
  reduction_prev: bool


def plan(channels: int, num_cells: int, image_shape: tuple[int, ...],
         stem_multiplier: int = 3) -> list[CellPlan]:
  """The cells of ``evalnet.EvalNetwork`` with their shapes."""
  h, w = image_shape[:2]
  reductions = reduction_layers(num_cells)
  c_pp = c_p = stem_multiplier * channels
  c, out, reduction_prev = channels, [], False
  for i in range(num_cells):
    reduction = i in reductions
    if reduction:
      c *= 2
    out.append(CellPlan("reduce" if reduction else "normal", c, h, w, c_pp, c_p, reduction_prev))
    if reduction:
      h, w = math.ceil(h / 2), math.ceil(w / 2)
    c_pp, c_p, reduction_prev = c_p, _NODES * c, reduction
  return out


def _fixed_macs(cells: list[CellPlan], image_shape, channels: int, num_classes: int,
                stem_multiplier: int = 3) -> int:
  """Stem, preprocessing of every cell, classifier."""
  h, w, c_in = image_shape
  total = 9 * c_in * stem_multiplier * channels * h * w
  for p in cells:
    if p.reduction_prev:  # factorized reduce to this cell's input size: two 1x1 convs to c / 2
      total += 2 * p.channels_prev_prev * (p.channels // 2) * p.height * p.width
    else:
      total += p.channels_prev_prev * p.channels * p.height * p.width
    total += p.channels_prev * p.channels * p.height * p.width
  return total + _NODES * cells[-1].channels * num_classes


def _op_cost(metric: str, name: str, p: CellPlan, src: int) -> float:
  """Millions of ``metric`` of op ``name`` on an edge from state ``src`` of
  cell ``p``: a reduction cell's edges from its inputs have stride 2, its
  edges between nodes run at the reduced size."""
  h, w, stride = p.height, p.width, 1
  if p.cell_type == "reduce":
    if src < _INPUTS:
      stride = 2
    else:
      h, w = math.ceil(h / 2), math.ceil(w / 2)
  if metric == "flops":
    return op_macs(name, p.channels, h, w, stride) / 1e6
  return op_params(name, p.channels, stride) / 1e6


class EdgeCosts(NamedTuple):
  """The expected-cost model of a search (see the module docstring)."""
  metric: str
  fixed: float  # millions
  per_edge: dict[str, np.ndarray]  # [E, N] per cell type, millions, selection-weighted
  target: float  # millions
  weight: float


def edge_costs(space: SearchSpace, metric: str, image_shape: tuple[int, ...],
               num_classes: int, channels: int = 36, num_cells: int = 20) -> tuple[float, dict]:
  """``(fixed, {cell type: [E, N]})`` in millions of ``metric``."""
  cells = plan(channels, num_cells, image_shape)
  indegree = {d: sum(1 for _, dd in space.edges if dd == d) for _, d in space.edges}
  keep = np.asarray([min(2, indegree[d]) / indegree[d] for _, d in space.edges])
  per_edge = {t: np.zeros((space.num_edges, space.num_ops)) for t in space.cell_types}
  for p in cells:
    for e, (src, _) in enumerate(space.edges):
      for i, name in enumerate(space.ops):
        per_edge[p.cell_type][e, i] += keep[e] * _op_cost(metric, name, p, src)
  return fixed_cost(metric, cells, image_shape, channels, num_classes), per_edge


def fixed_cost(metric: str, cells: list[CellPlan], image_shape, channels: int,
               num_classes: int) -> float:
  """What every genotype's evaluation network costs besides its operations."""
  if metric == "flops":
    return _fixed_macs(cells, image_shape, channels, num_classes) / 1e6
  pool = tuple(("max_pool_3x3", i % 2) for i in range(2 * _NODES))  # parameter-free ops
  concat = tuple(range(_INPUTS, _INPUTS + _NODES))
  g = Genotype(pool, concat, pool, concat)
  net = evalnet.EvalNetwork(g, num_classes, channels, len(cells), auxiliary=False)
  k = jax.random.key(0)
  shapes = jax.eval_shape(lambda: net.init({"params": k, "dropout": k, "noise": k},
                                           jnp.zeros((1,) + tuple(image_shape)), False))
  return evalnet.parameter_count(shapes["params"]) / 1e6


def genotype_cost(genotype, metric: str, image_shape: tuple[int, ...],
                  num_classes: int, channels: int = 36, num_cells: int = 20) -> float:
  """Millions of ``metric`` of ``genotype``'s evaluation network (any space's)."""
  from xnas_jax import spaces  # pylint: disable=import-outside-toplevel
  fam = spaces.family_of_genotype(genotype)
  return fam.genotype_cost(genotype, metric, image_shape, num_classes, channels, num_cells)


def darts_genotype_cost(genotype: Genotype, metric: str, image_shape: tuple[int, ...],
                        num_classes: int, channels: int = 36, num_cells: int = 20) -> float:
  """Millions of ``metric`` of a DARTS genotype's ``NetworkCIFAR``."""
  cells = plan(channels, num_cells, image_shape)
  total = fixed_cost(metric, cells, image_shape, channels, num_classes)
  for p in cells:
    for op, src in genotype.edges(p.cell_type):
      total += _op_cost(metric, op, p, src)
  return total


def build(config: ml_collections.ConfigDict, space: SearchSpace, image_shape,
          num_classes: int) -> EdgeCosts | None:
  """The search's cost model, or None without a budget."""
  b = config.get("budget")
  if b is None or b.metric == "none":
    return None
  from xnas_jax import spaces  # pylint: disable=import-outside-toplevel
  fixed, per_edge = spaces.family(space).edge_costs(space, b.metric, image_shape, num_classes,
                                                    b.channels, b.num_cells)
  return EdgeCosts(b.metric, fixed, per_edge, float(b.target), float(b.weight))


def expected_cost(costs: EdgeCosts, u: dict[str, jax.Array]) -> jax.Array:
  """``fixed + sum_t sum_{e,i} u c`` (millions)."""
  return costs.fixed + sum(jnp.sum(u[t] * c) for t, c in costs.per_edge.items())


def penalty(costs: EdgeCosts, u: dict[str, jax.Array]) -> jax.Array:
  """``weight * (E_u[cost] / target - 1)_+``."""
  return costs.weight * jax.nn.relu(expected_cost(costs, u) / costs.target - 1.0)


def penalty_gradient(costs: EdgeCosts, u: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The penalty's gradient w.r.t. ``u`` (``weight * c / target`` while over)."""
  return jax.grad(lambda u: penalty(costs, u))(u)


def validate(config: ml_collections.ConfigDict, error: type) -> None:
  """The budget section's names and ranges (``config_checks`` rules)."""
  b = config.get("budget")
  if b is None:
    return
  config_checks.check_choice(config, "budget.metric", METRICS, error)
  config_checks.check(config, RULES, error)
  if b.metric != "none" and not b.target > 0:
    raise error(f"budget.target must be > 0 with budget.metric {b.metric!r}, got {b.target}")
