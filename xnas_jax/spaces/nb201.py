"""NAS-Bench-201 (Dong & Yang, ICLR 2020), as its release builds it.

The cell (D-X-Y/AutoDL-Projects, ``xautodl/models/cell_searchs/search_cells.py``
and ``cell_infers/cells.py``): states ``0..3``; node ``i`` sums one operation
of every earlier state (6 edges, ``"i<-j"`` in the release, here ``(j, i)``
in the same order), and the cell's output is node 3.  Operations
(``cell_operations.py``): ``none``, ``skip_connect``, ``nor_conv_1x1`` and
``nor_conv_3x3`` (ReLU-Conv-BN; the convolution has a bias where the BN is
not affine), ``avg_pool_3x3`` (``count_include_pad=False``, no BN).

The network (``cell_infers/tiny_network.py``, ``cell_searchs/search_model_darts.py``):
a 3x3-conv stem with an affine BN; three stages of ``num_cells`` cells at
``channels``, 2x and 4x the channels, with the release's ``ResNetBasicblock``
(stride 2) between the stages; then BN, ReLU, global average pooling and a
linear classifier.  Every cell shares one architecture (one cell type,
``"cell"``, replicated ``3 * num_cells`` times).  The search network's cell
BNs are not affine, as the release's DARTS supernet has them
(``affine=False``); the evaluation network's are (``TinyNetwork``).

The genotype is the release's arch string, for example
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``:
nodes separated by ``+``, each listing ``op~source`` for every earlier state.

Selection: magnitude selection takes every edge's strongest operation,
``none`` included (the release's ``genotype()``: ``argmax`` over all
operations); perturbation selection decides one operation per edge and has
no topology phase (ruocwang/darts-pt, ``nasbench201/projection.py``), with
``none`` among the candidates.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from typing import Any, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xnas_jax import config_checks
from xnas_jax import ops as ops_lib
from xnas_jax import supernet as supernet_lib
from xnas_jax.search_space import SearchSpace

NAME = "nb201"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 3  # nodes 1..3 after the input state 0
CELL_TYPE = "cell"
INPUT_NAMES = ("0",)
NODE_NUMBERS_FROM = 1  # nodes are drawn as 1, 2, 3

Edge = tuple[str, int]


def edges() -> tuple[tuple[int, int], ...]:
  """``(src, dst)``: node ``i`` from every ``j < i``, node by node (the
  release's sorted ``"i<-j"`` keys)."""
  return tuple((j, i) for i in range(1, NUM_NODES + 1) for j in range(i))


def make_space(config: ml_collections.ConfigDict | None = None, image_shape=None,
               num_classes=None) -> SearchSpace:
  del config, image_shape, num_classes  # one cell, whatever the data
  row = tuple(True for _ in OPS)
  es = edges()
  return SearchSpace(name="nb201", ops=OPS, edges=es, available=(tuple(row for _ in es),),
                     cell_output="last", topology="complete", family=NAME,
                     cell_types=(CELL_TYPE,), num_inputs=1, num_nodes=NUM_NODES,
                     kept_per_node=0)


def validate(config: ml_collections.ConfigDict, error: type = config_checks.ConfigError) -> None:
  """``op_set`` must be ``"nb201"`` (the space's five operations)."""
  if config.get("op_set") != "nb201":
    raise error(f"op_set {config.get('op_set')!r} is not NAS-Bench-201's; use "
                f"--config.op_set=nb201 with --config.space=nb201")
  if config.get("partial_channels", 1) > 1:
    raise error(f"partial_channels {config.partial_channels} is not available on NAS-Bench-201 "
                f"(its release searches without it); use 1")
  if config.get("progressive", {}).get("enabled", False):
    raise error("progressive.enabled is not available on NAS-Bench-201; use False")
  if config.get("arch_sharing", "cell_type") != "cell_type":
    raise error(f"arch_sharing={config.arch_sharing!r} is not available on NAS-Bench-201, "
                f"whose cells share one architecture as its release searches them; use "
                f"'cell_type'")


def image_size_error(image_shape: tuple[int, ...], num_cells: int) -> str | None:
  """The two residual blocks halve the images with a 2x2 average pooling, so
  both sides must be multiples of 4."""
  del num_cells
  h, w = image_shape[:2]
  if h % 4 or w % 4:
    return (f"images of {h}x{w} pixels cannot pass NAS-Bench-201's network: its two residual "
            f"blocks halve them with a 2x2 pooling, so both sides must be multiples of 4")
  return None


# --- Genotype ---------------------------------------------------------------


_TOKEN = re.compile(r"^([a-z0-9_]+)~(\d+)$")


@dataclasses.dataclass(frozen=True)
class Genotype:
  """A NAS-Bench-201 cell: per node ``1..3``, its ``(op, source)`` edges."""
  nodes: tuple[tuple[Edge, ...], ...]
  num_inputs: ClassVar[int] = 1

  @property
  def arch(self) -> str:
    """The release's arch string."""
    return "|" + "|+|".join("|".join(f"{op}~{src}" for op, src in node)
                            for node in self.nodes) + "|"

  def __str__(self) -> str:
    return self.arch

  def to_dict(self) -> dict[str, Any]:
    return {"arch": self.arch}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  @classmethod
  def parse(cls, arch: str) -> "Genotype":
    """Reads an arch string; raises ``ValueError`` naming the bad part."""
    text = arch.strip()
    if not (text.startswith("|") and text.endswith("|")):
      raise ValueError(f"malformed NAS-Bench-201 arch string {arch!r}: it starts and ends "
                       f"with '|', nodes separated by '+'")
    parts = text.split("+")
    if len(parts) != NUM_NODES:
      raise ValueError(f"NAS-Bench-201 arch string {arch!r} has {len(parts)} nodes; "
                       f"expected {NUM_NODES}")
    nodes = []
    for i, part in enumerate(parts, start=1):
      if not (part.startswith("|") and part.endswith("|")) or len(part) < 2:
        raise ValueError(f"malformed node {part!r} in arch string {arch!r}: expected "
                         f"'|op~source|...|'")
      tokens = part[1:-1].split("|")
      node = []
      for token in tokens:
        m = _TOKEN.match(token)
        if not m:
          raise ValueError(f"malformed edge {token!r} in arch string {arch!r}: expected "
                           f"'op~source'")
        op, src = m.group(1), int(m.group(2))
        if op not in OPS:
          raise ValueError(f"unknown operation {op!r} in arch string {arch!r}; expected one "
                           f"of {list(OPS)}")
        node.append((op, src))
      if sorted(src for _, src in node) != list(range(i)):
        raise ValueError(f"node {i} of arch string {arch!r} takes sources "
                         f"{[s for _, s in node]}; expected one edge from each of "
                         f"{list(range(i))}")
      nodes.append(tuple(sorted(node, key=lambda e: e[1])))
    return cls(tuple(nodes))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Genotype":
    if not isinstance(d.get("arch"), str):
      raise ValueError("not a NAS-Bench-201 genotype: no 'arch' string")
    return cls.parse(d["arch"])

  def kept_edges(self, cell_type: str = CELL_TYPE) -> dict[tuple[int, int], str]:
    del cell_type
    return {(src, i): op for i, node in enumerate(self.nodes, start=1) for op, src in node}

  def ops(self) -> tuple[str, ...]:
    return tuple(op for node in self.nodes for op, _ in node)


def genotype_from(obj: Any) -> Genotype | None:
  """A genotype from its JSON dict (``{"arch": ...}``) or its arch string;
  None for another family's form."""
  if isinstance(obj, str) and obj.strip().startswith("|"):
    return Genotype.parse(obj)
  if isinstance(obj, dict) and "arch" in obj:
    return Genotype.from_dict(obj)
  return None


def from_cells(space: SearchSpace, cells: Mapping[str, Sequence[Edge]]) -> Genotype:
  """The genotype of the kept ``(op, src)`` edges, node by node."""
  flat, nodes, k = list(cells[CELL_TYPE]), [], 0
  for dst in space.nodes:
    n = len(space.incoming(dst))
    nodes.append(tuple(flat[k:k + n]))
    k += n
  return Genotype(tuple(nodes))


def discretize(weights: Mapping[str, np.ndarray], space: SearchSpace,
               alive: Mapping[str, np.ndarray] | None = None, notes: list[str] | None = None,
               edge_weights: Mapping[str, np.ndarray] | None = None) -> Genotype:
  """Magnitude selection: each edge's strongest live operation, ``none``
  included (the release's ``genotype()``); ties go to the lower index and are
  noted.  Every edge stays, so edge weights do not change the choice."""
  del edge_weights
  w = np.asarray(weights[CELL_TYPE], np.float64)
  live = space.available_mask(CELL_TYPE)
  if alive is not None:
    live = live & np.asarray(alive[CELL_TYPE], bool)
  chosen = []
  for e, (src, dst) in enumerate(space.edges):
    scores = np.where(live[e], w[e], -np.inf)
    i = int(np.argmax(scores))
    if notes is not None and np.sum(scores == scores[i]) > 1:
      notes.append(f"tie: edge {src}->{dst}: several operations share the largest weight; "
                   f"kept {space.ops[i]}")
    chosen.append((space.ops[i], src))
  return from_cells(space, {CELL_TYPE: chosen})


def cells_to_draw(genotype: Genotype) -> list[tuple[str, Sequence, Sequence[int]]]:
  return [("cell", genotype.nodes, (NUM_NODES,))]


# --- Networks ---------------------------------------------------------------


class ResNetBasicblock(nn.Module):
  """The release's ``ResNetBasicblock`` between stages: ReLU-Conv3x3(stride)-BN,
  ReLU-Conv3x3-BN, plus a shortcut (2x2 average pooling and a 1x1 conv at
  stride 2; a ReLU-Conv1x1-BN where only the channels change)."""
  features: int
  stride: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    y = ops_lib.ReLUConvBN(self.features, 3, self.stride, affine=True, name="conv_a")(x, train)
    y = ops_lib.ReLUConvBN(self.features, 3, 1, affine=True, name="conv_b")(y, train)
    if self.stride == 2:
      r = nn.avg_pool(x, (2, 2), (2, 2), padding="VALID")
      r = ops_lib.Pointwise(self.features, name="downsample")(r)
    elif x.shape[-1] != self.features:
      r = ops_lib.ReLUConvBN(self.features, 1, 1, affine=True, name="downsample")(x, train)
    else:
      r = x
    return r + y


class Head(nn.Module):
  """``lastact`` (affine BN, ReLU), global average pooling, linear classifier."""
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = nn.relu(ops_lib.batch_norm(True, train)(x))
    return nn.Dense(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))


def layer_plan(channels: int, num_cells: int) -> list[tuple[str, int]]:
  """``(kind, channels)`` per layer: ``"cell"`` or ``"block"`` (the residual
  block opening a stage), as the release's ``layer_channels``/``layer_reductions``."""
  out = []
  for stage in range(3):
    c = channels * 2 ** stage
    if stage:
      out.append(("block", c))
    out += [("cell", c)] * num_cells
  return out


@dataclasses.dataclass(frozen=True)
class Supernet(supernet_lib.Supernet):
  """The NAS-Bench-201 search network (the release's ``TinyNetworkDarts``).

  Same interface as the DARTS ``Supernet``: ``init(key, x)``,
  ``apply(variables, x, weights, masks, train=, rng=)`` with the mixture
  weights ``weights["cell"]`` ``[E, N]`` (or ``[R, B, E, N]``, one copy per
  cell and example), ``replicas``, ``default_masks``, ``built_ops``.  Each
  cell's mixed operations run as the DARTS supernet's do (``lax.scan`` over
  its 6 edges, experts gated by ``lax.cond``).  ``num_cells`` is ``N``, the
  cells per stage.
  """
  channels: int = 16
  num_cells: int = 5

  @functools.cached_property
  def layers(self) -> tuple[Any, ...]:
    """Per layer, a ``SearchCell`` or the channels of a residual block."""
    out = []
    for kind, c in layer_plan(self.channels, self.num_cells):
      if kind == "block":
        out.append(c)
      else:
        out.append(supernet_lib.SearchCell(
            self.space, CELL_TYPE, c, False, self.built_ops(CELL_TYPE), self.edge_loop,
            self.gate, self.depthwise_impl, self.remat, self.partial_channels,
            preprocess=False, pool_bn=False))
    return tuple(out)

  @functools.cached_property
  def cells(self) -> tuple[supernet_lib.SearchCell, ...]:
    return tuple(l for l in self.layers if isinstance(l, supernet_lib.SearchCell))

  def _init_structure(self, key: jax.Array, x: jax.Array) -> supernet_lib.Variables:
    keys = jax.random.split(key, len(self.layers) + 2)
    stem = supernet_lib.Stem(self.channels)
    v = stem.init(keys[0], x, True)
    params, stats = {"stem": v["params"]}, {"stem": v["batch_stats"]}
    s = jax.eval_shape(lambda: stem.apply(v, x, False))
    e, n = self.space.num_edges, self.space.num_ops
    for i, layer in enumerate(self.layers):
      a = jnp.zeros(s.shape, s.dtype)
      if isinstance(layer, supernet_lib.SearchCell):
        lv = layer.init(keys[i + 1], None, a)
        s = jax.eval_shape(lambda lv=lv, a=a, layer=layer: layer.apply(
            lv, None, a, jnp.zeros((e, a.shape[0], n)), jnp.ones((e, n), bool),
            jax.random.key(0), False)[0])
        name = f"cell{i}"
      else:
        block = ResNetBasicblock(layer)
        lv = block.init(keys[i + 1], a, True)
        s = jax.eval_shape(lambda lv=lv, a=a, block=block: block.apply(lv, a, False))
        name = f"block{i}"
      params[name], stats[name] = lv["params"], lv.get("batch_stats", {})
    hv = Head(self.num_classes).init(keys[-1], jnp.zeros(s.shape, s.dtype), True)
    params["head"], stats["head"] = hv["params"], hv["batch_stats"]
    return {"params": params, "batch_stats": stats}

  def apply(self, variables: supernet_lib.Variables, x: jax.Array,
            weights: Mapping[str, jax.Array], masks: Mapping[str, jax.Array] | None = None, *,
            train: bool = True, rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Computes logits; see ``supernet.Supernet.apply`` for the arguments."""
    params, stats = supernet_lib._split(variables)  # pylint: disable=protected-access
    masks = dict(self.default_masks() if masks is None else masks)
    b, e, n = x.shape[0], self.space.num_edges, self.space.num_ops
    r = max(self.replicas[CELL_TYPE], 1)
    full = jnp.broadcast_to(weights[CELL_TYPE], (r, b, e, n))
    edge_w = (jnp.broadcast_to(weights["edges"][CELL_TYPE], (r, b, e))
              if "edges" in weights else None)
    apply_module = supernet_lib._apply_module  # pylint: disable=protected-access
    s, st = apply_module(supernet_lib.Stem(self.channels), {"params": params["stem"],
                                               "batch_stats": stats["stem"]}, x, train)
    new_stats = {"stem": st}
    seen = 0
    for i, layer in enumerate(self.layers):
      if isinstance(layer, supernet_lib.SearchCell):
        u = jnp.swapaxes(full[seen], 0, 1)  # [E, B, N]
        ew = None if edge_w is None else jnp.swapaxes(edge_w[seen], 0, 1)
        seen += 1
        key = jax.random.fold_in(rng, i) if rng is not None else None
        s, new_stats[f"cell{i}"] = layer.apply(
            {"params": params[f"cell{i}"], "batch_stats": stats[f"cell{i}"]},
            None, s, u, masks[CELL_TYPE], key, train, ew)
      else:
        s, new_stats[f"block{i}"] = apply_module(
            ResNetBasicblock(layer), {"params": params[f"block{i}"],
                                      "batch_stats": stats[f"block{i}"]}, s, train)
    logits, new_stats["head"] = apply_module(
        Head(self.num_classes), {"params": params["head"], "batch_stats": stats["head"]}, s,
        train)
    return logits, new_stats


def supernet(space: SearchSpace, config: ml_collections.ConfigDict, num_classes: int,
             **options: Any) -> Supernet:
  """The search network of ``config.channels`` (C) and ``config.num_cells`` (N per stage)."""
  return Supernet(space, num_classes, channels=config.channels, num_cells=config.num_cells,
                  **options)


class InferCell(nn.Module):
  """One cell of a genotype (the release's ``InferCell``): node ``i`` sums its
  edges' operations; the output is the last node.  ``none`` edges add zeros."""
  genotype: Genotype
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    states = [x]
    k = 0
    for node in self.genotype.nodes:
      total = None
      for op, src in node:
        if op != "none":
          y = ops_lib.make_op(op, self.channels, 1, affine=True, pool_bn=False).clone(
              parent=self, name=f"edge{k}")(states[src], train)
          total = y if total is None else total + y
        k += 1
      states.append(jnp.zeros_like(x) if total is None else total)
    return states[-1]


class TinyNetwork(nn.Module):
  """The NAS-Bench-201 evaluation network of a genotype (the release's
  ``TinyNetwork``): ``__call__(x, train, drop_prob)`` returns ``(logits,
  None)`` (no auxiliary head, no drop-path: ``drop_prob`` is ignored)."""
  genotype: Genotype
  num_classes: int
  channels: int = 16
  num_cells: int = 5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True,
               drop_prob: jax.Array | float = 0.0) -> tuple[jax.Array, None]:
    del drop_prob
    s = supernet_lib.Stem(self.channels, name="stem")(x, train)
    for i, (kind, c) in enumerate(layer_plan(self.channels, self.num_cells)):
      if kind == "block":
        s = ResNetBasicblock(c, name=f"block{i}")(s, train)
      else:
        s = InferCell(self.genotype, c, name=f"cell{i}")(s, train)
    return Head(self.num_classes, name="head")(s, train), None


def eval_network(genotype: Genotype, num_classes: int, channels: int, num_cells: int,
                 auxiliary: bool, network: str = "cifar") -> TinyNetwork:
  """``TinyNetwork`` (NAS-Bench-201 has no auxiliary head: ``auxiliary`` is ignored)."""
  del auxiliary
  if network != "cifar":
    raise ValueError(f"network {network!r} is not available for NAS-Bench-201 genotypes, "
                     f"whose only evaluation network is its TinyNetwork; use 'cifar'")
  return TinyNetwork(genotype, num_classes, channels, num_cells)


# --- Costs (budget) ---------------------------------------------------------


def _conv_cost(metric: str, k: int, c_in: int, c_out: int, hw: int, bn: bool = True) -> float:
  if metric == "flops":
    return k * k * c_in * c_out * hw
  return k * k * c_in * c_out + (2 * c_out if bn else 0)


def _op_cost(metric: str, op: str, c: int, hw: int) -> float:
  """An evaluation-network edge's cost (affine BN, no conv bias)."""
  if op == "nor_conv_3x3":
    return _conv_cost(metric, 3, c, c, hw)
  if op == "nor_conv_1x1":
    return _conv_cost(metric, 1, c, c, hw)
  return 0.0


def _stages(channels: int, image_shape) -> list[tuple[int, int]]:
  """``(channels, pixels)`` of the three stages."""
  h, w = image_shape[:2]
  return [(channels * 2 ** s, (h // 2 ** s) * (w // 2 ** s)) for s in range(3)]


def fixed_cost(metric: str, image_shape, channels: int, num_classes: int) -> float:
  """Stem, residual blocks, last BN and classifier, in millions of ``metric``."""
  h, w, c_in = image_shape
  total = _conv_cost(metric, 3, c_in, channels, h * w)
  stages = _stages(channels, image_shape)
  for (c_prev, _), (c, hw) in zip(stages[:-1], stages[1:]):
    total += _conv_cost(metric, 3, c_prev, c, hw) + _conv_cost(metric, 3, c, c, hw)
    total += _conv_cost(metric, 1, c_prev, c, hw, bn=False)
  c_last = stages[-1][0]
  total += (c_last * num_classes if metric == "flops"
            else 2 * c_last + c_last * num_classes + num_classes)
  return total / 1e6


def edge_costs(space: SearchSpace, metric: str, image_shape, num_classes: int,
               channels: int = 16, num_cells: int = 5) -> tuple[float, dict[str, np.ndarray]]:
  """``(fixed, {"cell": [E, N]})``: every edge is kept, in every cell of the 3 stages."""
  per_edge = np.zeros((space.num_edges, space.num_ops))
  for c, hw in _stages(channels, image_shape):
    for i, op in enumerate(space.ops):
      per_edge[:, i] += num_cells * _op_cost(metric, op, c, hw) / 1e6
  return fixed_cost(metric, image_shape, channels, num_classes), {CELL_TYPE: per_edge}


def genotype_cost(genotype: Genotype, metric: str, image_shape, num_classes: int,
                  channels: int = 16, num_cells: int = 5) -> float:
  """Millions of ``metric`` of the genotype's ``TinyNetwork``."""
  total = fixed_cost(metric, image_shape, channels, num_classes)
  for c, hw in _stages(channels, image_shape):
    total += num_cells * sum(_op_cost(metric, op, c, hw) for op in genotype.ops()) / 1e6
  return total


def parameter_count(genotype: Genotype, num_classes: int = 10, channels: int = 16,
                    num_cells: int = 5, image_shape=(32, 32, 3)) -> int:
  """The genotype's ``TinyNetwork`` parameter count, from ``genotype_cost``'s formulas."""
  return int(round(genotype_cost(genotype, "params", image_shape, num_classes, channels,
                                 num_cells) * 1e6))

