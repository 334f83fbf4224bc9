"""The search network (supernet) as a pure function of two pytrees.

``Supernet.init`` returns the network variables ``{"params", "batch_stats"}``;
``Supernet.apply`` takes the *mixture weights* ``u`` of every forecaster as a
separate argument (XNAS eq. 1)::

    p^(j,k) = sum_i u_i^(j,k) f_i^(j,k)(x^(j)),    x^(k) = sum_{j<k} p^(j,k).

The architecture weights are therefore never Flax parameters: the caller maps
its own architecture parameters (DARTS logits, XNAS log-weights) to ``u`` and
differentiates through that map, or w.r.t. ``u`` itself (XNAS's reward
``R_i = -dloss/du_i``).

Compile time.  XLA's compile time grows faster than linearly with the size of
the graph it sees (``benchmarks/compile_time.py``), so every cell runs its edges with
``lax.scan``: the mixed operation of an edge is traced once per cell (and per
stride), not once per edge.  Normal cells scan all their edges; reduction cells
scan the strided edges leaving the cell inputs, then the edges between nodes.

Wiped experts.  Which operations are *built* is static (``active_ops``, one
tuple per cell type; changing it means a new ``Supernet`` and a new
compilation).  Within the built operations, a dynamic boolean ``mask`` per
edge selects the live experts; each expert runs under ``lax.cond``, so a masked
expert's convolutions are not executed, forward or backward.  Hence a wipeout
saves compute at once, and an op wiped on every edge of a cell type can be
dropped from the graph (a rebuild) at the next epoch boundary.

Partial channels (PC-DARTS, Xu et al. 2020, sec. 3.1).  With
``partial_channels = K > 1`` an edge sends the first ``C/K`` channels of its
input through the mixed operation (whose experts are built for ``C/K``
channels) and the other ``C - C/K`` past it (2x2 max-pooled on a strided
edge), concatenates the two and shuffles the channels in ``K`` groups::

    f^(j,k)(x) = shuffle_K(concat(sum_i u_i f_i(x[:C/K]), pool(x[C/K:]))).

Edge normalization (PC-DARTS sec. 3.2) weighs each edge's output by
``w^(j,k)``, given as ``weights["edges"]`` (``xnas_jax.edge_norm``):
``x^(k) = sum_{j<k} w^(j,k) f^(j,k)(x^(j))``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xnas_jax import ops as ops_lib
from xnas_jax.search_space import SearchSpace
from xnas_jax.search_space import reduction_layers

PyTree = Any
Variables = dict[str, dict[str, Any]]  # {"params": ..., "batch_stats": ...}


def _split(variables: Mapping[str, Any]) -> tuple[dict, dict]:
  return dict(variables.get("params", {})), dict(variables.get("batch_stats", {}))


class Stem(nn.Module):
  """3x3 conv -> affine BN, as the DARTS stem."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
    return ops_lib.batch_norm(True, train)(x)


class Head(nn.Module):
  """Global average pooling -> linear classifier."""
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """PC-DARTS's ``channel_shuffle`` in NHWC: channel ``g * C/groups + j``
  moves to ``j * groups + g``."""
  *lead, c = x.shape
  x = x.reshape(*lead, groups, c // groups)
  return jnp.swapaxes(x, -1, -2).reshape(*lead, c)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """``nn.MaxPool2d(2, 2)`` of PC-DARTS's bypass on a strided edge, padded at
  the end of an odd side so that it matches the strided experts'
  ``ceil(H / 2)``."""
  pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding=pad)


def _apply_module(module: nn.Module, variables: Variables, x: jax.Array,
                  train: bool, rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Applies a Flax module; returns its output and its new batch statistics."""
  rngs = {"noise": rng} if rng is not None else None
  if train and variables.get("batch_stats"):
    y, upd = module.apply(variables, x, train, mutable=["batch_stats"], rngs=rngs)
    return y, dict(upd["batch_stats"])
  y = module.apply(variables, x, train, rngs=rngs)
  return y, dict(variables.get("batch_stats", {}))


_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


@functools.partial(jax.jit, static_argnums=0)
def _materialize_leaves(spec: tuple, key: jax.Array) -> list[jax.Array]:
  sizes = [int(np.prod(shape)) for _, shape, _, _ in spec]
  draw = jax.random.truncated_normal(key, -2.0, 2.0, (max(sum(sizes), 1),), jnp.float32)
  leaves, offset = [], 0
  for (kind, shape, dtype, fan_in), n in zip(spec, sizes):
    if kind == "kernel":
      std = 1.0 / np.sqrt(fan_in) / _TRUNC_STD  # lecun_normal = variance_scaling(1, fan_in)
      leaves.append((draw[offset:offset + n].reshape(shape) * std).astype(dtype))
    elif kind == "one":
      leaves.append(jnp.ones(shape, dtype))
    else:
      leaves.append(jnp.zeros(shape, dtype))
    offset += n
  return leaves


def _materialize(shapes: PyTree, key: jax.Array) -> PyTree:
  """Draws values for an abstract Flax variable tree with Flax's initializers."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  spec = []
  for path, leaf in paths:
    names = [getattr(p, "key", "") for p in path]
    last = names[-1]
    if last == "kernel":
      # Conv kernels are [..., kh, kw, c_in / groups, c_out]; the head's Dense
      # kernel is [c_in, c_out]; leading axes stack the edges of a scan.
      fan_in = leaf.shape[-2] if "head" in names else int(np.prod(leaf.shape[-4:-1]))
      spec.append(("kernel", leaf.shape, leaf.dtype, fan_in))
    elif last in ("scale", "var"):
      spec.append(("one", leaf.shape, leaf.dtype, 0))
    else:
      spec.append(("zero", leaf.shape, leaf.dtype, 0))
  return jax.tree_util.tree_unflatten(treedef, _materialize_leaves(tuple(spec), key))


@dataclasses.dataclass(frozen=True)
class EdgeGroup:
  """Edges of one cell run by one ``lax.scan`` (same input shape and stride)."""
  edge_ids: tuple[int, ...]  # indices into SearchSpace.edges
  stride: int


@dataclasses.dataclass(frozen=True)
class SearchCell:
  """One cell of the supernet; a static description with pure init/apply."""
  space: SearchSpace
  cell_type: str
  channels: int
  reduction_prev: bool
  built_ops: tuple[str, ...]  # the ops traced into this cell's mixed op
  edge_loop: str = "scan"  # "scan": lax.scan over an edge group; "unroll": one trace per edge
  gate: str = "cond"  # "cond": each expert under lax.cond on its mask bit; "mask": always run
  depthwise_impl: str = "auto"  # ops.depthwise_conv's implementation
  # Recompute each edge's forward in the backward pass of the edge scan
  # instead of stacking its residuals (see _scan_edges).
  remat: bool = True
  partial_channels: int = 1  # K of PC-DARTS: the mixed op sees C/K channels
  # DARTS preprocesses its two inputs (ReLU-Conv1x1-BN, or a factorized
  # reduce after a reduction cell); NAS-Bench-201's cell takes its one input as is.
  preprocess: bool = True
  # DARTS's search network follows each pooling with a non-affine BN; NAS-Bench-201's does not.
  pool_bn: bool = True
  # Whether the cell is a reduction cell, where its cell_type (the key of its
  # architecture parameters) does not say (an architecture per cell).
  reduces: bool | None = None

  @property
  def op_channels(self) -> int:
    """The channels each expert of this cell is built for (``C / K``)."""
    return self.channels // self.partial_channels

  @property
  def reduction(self) -> bool:
    return self.cell_type == "reduce" if self.reduces is None else self.reduces

  @property
  def groups(self) -> tuple[EdgeGroup, ...]:
    if not self.reduction:
      return (EdgeGroup(tuple(range(self.space.num_edges)), 1),)
    n_in = self.space.num_inputs
    from_inputs = tuple(k for k, (s, _) in enumerate(self.space.edges) if s < n_in)
    from_nodes = tuple(k for k, (s, _) in enumerate(self.space.edges) if s >= n_in)
    groups = [EdgeGroup(from_inputs, 2)]
    if from_nodes:
      groups.append(EdgeGroup(from_nodes, 1))
    return tuple(groups)

  def _op_modules(self, stride: int) -> dict[str, nn.Module]:
    return {name: ops_lib.make_op(name, self.op_channels, stride, pool_bn=self.pool_bn,
                                  depthwise_impl=self.depthwise_impl)
            for name in self.built_ops if name != "none"}

  def _preprocess(self) -> tuple[nn.Module, nn.Module]:
    pre0 = (ops_lib.FactorizedReduce(self.channels) if self.reduction_prev
            else ops_lib.ReLUConvBN(self.channels))
    return pre0, ops_lib.ReLUConvBN(self.channels)

  def _output(self) -> nn.Module | None:
    if self.space.cell_output == "conv1x1":
      # nn.Conv's kernel under its name; a dot product (ops.Pointwise), which
      # XLA:CPU runs faster than its 1x1 convolution (benchmarks/cell_step.py).
      return ops_lib.Pointwise(self.space.num_nodes * self.channels)
    return None

  def init(self, key: jax.Array, s0: jax.Array | None, s1: jax.Array) -> Variables:
    k0, k1, k_out, k_edges = jax.random.split(key, 4)
    params, stats = {}, {}
    if self.preprocess:
      pre0, pre1 = self._preprocess()
      v0 = pre0.init(k0, s0, True)
      v1 = pre1.init(k1, s1, True)
      x = pre1.apply(v1, s1, False)
      params = {"pre0": v0["params"], "pre1": v1["params"]}
      stats = {"pre0": v0["batch_stats"], "pre1": v1["batch_stats"]}
    else:
      x = s1
    x_op = x[..., :self.op_channels]
    for g, group in enumerate(self.groups):
      modules = self._op_modules(group.stride)
      keys = jax.random.split(jax.random.fold_in(k_edges, g), len(group.edge_ids))
      gp, gs = {}, {}
      for name, module in modules.items():
        init = lambda k, m=module: m.init({"params": k, "noise": k}, x_op, True)
        op_keys = jax.vmap(lambda k, i=self.space.ops.index(name): jax.random.fold_in(k, i))(keys)
        gp[name], gs[name] = _split(jax.vmap(init)(op_keys))
      params[f"edges{g}"], stats[f"edges{g}"] = gp, gs
    out = self._output()
    if out is not None:
      h = x.shape[1] // (2 if self.reduction else 1)
      w = x.shape[2] // (2 if self.reduction else 1)
      dummy = jnp.zeros((1, h, w, self.space.num_nodes * self.channels), x.dtype)
      params["out"] = out.init(k_out, dummy)["params"]
    return {"params": params, "batch_stats": stats}

  def apply(self, variables: Variables, s0: jax.Array | None, s1: jax.Array,
            weights: jax.Array, mask: jax.Array, rng: jax.Array | None,
            train: bool, edge_weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Runs the cell.

    Args:
      variables: this cell's ``{"params", "batch_stats"}``.
      s0, s1: outputs of the two previous cells, NHWC (a cell of one input,
        without preprocessing, reads ``s1`` only).
      weights: mixture weights ``u``, ``[num_edges, batch, num_ops]``.
      mask: live experts, ``[num_edges, num_ops]`` bool.
      rng: key for the ``noise`` op (required if it is built).
      train: batch statistics (and their update) or running averages.
      edge_weights: PC-DARTS's edge normalization ``[num_edges, batch]``
        (None: every edge weighs 1).

    Returns:
      The cell output and the new batch statistics.
    """
    params, stats = _split(variables)
    if self.preprocess:
      pre0, pre1 = self._preprocess()
      x0, st0 = _apply_module(pre0, {"params": params["pre0"], "batch_stats": stats["pre0"]},
                              s0, train)
      x1, st1 = _apply_module(pre1, {"params": params["pre1"], "batch_stats": stats["pre1"]},
                              s1, train)
      new_stats = {"pre0": st0, "pre1": st1}
      inputs = jnp.stack([x0, x1])
    else:
      x1, new_stats = s1, {}
      inputs = s1[None]
    num_nodes = self.space.num_nodes
    nodes = None
    for g, group in enumerate(self.groups):
      ids = np.asarray(group.edge_ids)
      srcs = np.asarray([self.space.edges[k][0] for k in group.edge_ids])
      dsts = np.asarray([self.space.edges[k][1] for k in group.edge_ids])
      if nodes is None:
        h, w = x1.shape[1] // group.stride, x1.shape[2] // group.stride
        nodes = jnp.zeros((num_nodes,) + (x1.shape[0], h, w, x1.shape[3]), x1.dtype)
      keys = (jax.random.split(jax.random.fold_in(rng, g), len(ids))
              if rng is not None else None)
      nodes, st = self._scan_edges(
          group, params[f"edges{g}"], stats[f"edges{g}"], inputs, nodes,
          srcs, dsts, weights[ids], mask[ids], keys, train,
          None if edge_weights is None else edge_weights[ids])
      new_stats[f"edges{g}"] = st
    if self.space.cell_output == "last":  # NAS-Bench-201: the last node
      return nodes[-1], new_stats
    b, h, w, c = nodes.shape[1:]
    out = jnp.moveaxis(nodes, 0, 3).reshape(b, h, w, num_nodes * c)  # node-major concat
    out_mod = self._output()
    if out_mod is not None:
      out = out_mod.apply({"params": params["out"]}, out)
    return out, new_stats

  def _scan_edges(self, group, params, stats, inputs, nodes, srcs, dsts,
                  weights, mask, keys, train, edge_weights=None):
    modules = self._op_modules(group.stride)
    op_index = {name: self.space.ops.index(name) for name in modules}
    n_in = self.space.num_inputs
    from_inputs = all(s < n_in for s in srcs)
    from_nodes = all(s >= n_in for s in srcs)

    def mixed_op(p, s, x, u, m, key, ew):
      """sum_i u_i f_i(x) over the live experts; each runs under lax.cond.

      The sum is taken in ``u``'s dtype (so that float32 mixture weights give
      float32 rewards ``-grad_u . f_i`` for a bfloat16 network) and returned
      in the network's dtype.  With partial channels the experts see
      ``x[..., :C/K]``; ``ew`` (per example, or None) is PC-DARTS's edge
      weight (module docstring).
      """
      x_all, k = x, self.partial_channels
      x = x_all[..., :self.op_channels]
      zeros = jnp.zeros(x.shape[:1] + nodes.shape[2:4] + (self.op_channels,), u.dtype)
      y = zeros
      new_s = {}
      for name, module in modules.items():
        i = op_index[name]
        v = {"params": p[name], "batch_stats": s[name]}

        def on(x, module=module, v=v, i=i):
          out, st = _apply_module(module, v, x, train, key if name == "noise" else None)
          return u[:, i, None, None, None] * out.astype(u.dtype), st

        def off(x, v=v):
          del x
          return zeros, dict(v["batch_stats"])

        if self.gate == "cond":
          contrib, new_s[name] = jax.lax.cond(m[i], on, off, x)
        else:  # u_i is 0 for a masked expert: it runs and contributes nothing
          contrib, st = on(x)
          contrib = jnp.where(m[i], contrib, 0.0)
          new_s[name] = jax.tree.map(lambda a, b: jnp.where(m[i], a, b), st,
                                     dict(v["batch_stats"]))
        y = y + contrib
      y = y.astype(nodes.dtype)
      if k > 1:
        rest = x_all[..., self.op_channels:]
        if group.stride > 1:
          rest = max_pool_2x2(rest)
        y = channel_shuffle(jnp.concatenate([y, rest.astype(y.dtype)], axis=-1), k)
      if ew is not None:
        y = y * ew[:, None, None, None].astype(y.dtype)
      return y, new_s

    def edge(src, p, s, x, u, m, key, ew):
      if from_inputs:  # loop-invariant: selected here, it is no residual
        x = inputs[src]
      return mixed_op(p, s, x, u, m, key, ew)

    # Without remat, the scan's backward needs every residual of every edge
    # (tens of activations per expert), which its forward writes into stacked
    # [edges, ...] buffers; on XLA:CPU that costs more than the experts
    # themselves.  Under jax.checkpoint each edge's forward is recomputed in
    # the backward pass from what the edge reads.  The checkpoint wraps the
    # edge, not the scan's body: around the body, the residual kept per edge
    # was the whole carry (all four nodes); around the edge it is the edge's
    # input only, and nothing in a scan whose edges all leave the cell inputs
    # (a reduction cell's strided edges: the inputs are loop-invariant and
    # selected inside).  It is faster at the same compile time, and a normal
    # cell keeps a quarter of the residual bytes (benchmarks/cell_step.py).
    step = jax.checkpoint(edge) if self.remat else edge

    def body(nodes, xs):
      p, s, src, dst, u, m, key, ew = xs
      if from_inputs:
        x = None
      elif from_nodes:
        x = nodes[src - n_in]
      else:  # same shapes (stride 1): select without copying the state buffer
        x = jnp.where(src < n_in, inputs[jnp.minimum(src, n_in - 1)],
                      nodes[jnp.maximum(src - n_in, 0)])
      y, new_s = step(src, p, s, x, u, m, key, ew)
      return nodes.at[dst - n_in].add(y), new_s

    if keys is None:
      keys = jnp.zeros((len(srcs), 2), jnp.uint32)
    if self.edge_loop == "scan":
      xs = (params, stats, jnp.asarray(srcs), jnp.asarray(dsts), weights, mask, keys,
            edge_weights)
      return jax.lax.scan(body, nodes, xs)
    # Unrolled: static sources and destinations, one trace per edge.
    new_stats = []
    for pos, (src, dst) in enumerate(zip(srcs.tolist(), dsts.tolist())):
      take = lambda tree, pos=pos: jax.tree.map(lambda a: a[pos], tree)
      x = inputs[src] if src < n_in else nodes[src - n_in]
      y, st = mixed_op(take(params), take(stats), x, weights[pos], mask[pos], keys[pos],
                       None if edge_weights is None else edge_weights[pos])
      nodes = nodes.at[dst - n_in].add(y)
      new_stats.append(st)
    return nodes, jax.tree.map(lambda *a: jnp.stack(a), *new_stats)


@dataclasses.dataclass(frozen=True)
class Supernet:
  """The DARTS/XNAS search network.

  Attributes:
    space: the search space.
    num_classes: classifier outputs.
    channels: initial channels ``C`` (16 in DARTS and XNAS).
    num_cells: number of cells (8 in the papers); reductions at 1/3, 2/3.
    stem_multiplier: stem channels = ``stem_multiplier * C``.
    active_ops: per cell type (normal, reduce), the ops built into the graph;
      ``None`` builds every op of the space.  Part of the compiled structure.
    arch_sharing: ``"cell_type"`` (DARTS: every normal cell shares one
      architecture, every reduction cell another) or ``"cell"`` (Bi et al.'s
      S2: each cell ``i`` has its own, under the cell type ``f"cell{i}"`` of a
      space from ``search_space.per_cell``).
  """
  space: SearchSpace
  num_classes: int
  channels: int = 16
  num_cells: int = 8
  stem_multiplier: int = 3
  active_ops: tuple[tuple[str, ...], tuple[str, ...]] | None = None
  edge_loop: str = "scan"
  gate: str = "cond"
  depthwise_impl: str = "auto"
  remat: bool = True  # SearchCell.remat
  partial_channels: int = 1  # PC-DARTS's K (SearchCell.partial_channels)
  # Per cell type, [edges][ops] bools of the experts kept by a pruning
  # (DrNAS's progressive search, ``xnas_jax.progressive``); None: all.
  op_mask: tuple[tuple[tuple[bool, ...], ...], ...] | None = None
  arch_sharing: str = "cell_type"

  def built_ops(self, cell_type: str) -> tuple[str, ...]:
    if self.active_ops is None:
      avail = self.space.available_mask(cell_type).any(axis=0)
      return tuple(o for o, a in zip(self.space.ops, avail) if a)
    return self.active_ops[self.space.cell_types.index(cell_type)]

  @functools.cached_property
  def cells(self) -> tuple[SearchCell, ...]:
    reductions = reduction_layers(self.num_cells)
    cells, c, reduction_prev = [], self.channels, False
    for i in range(self.num_cells):
      reduction = i in reductions
      if reduction:
        c *= 2
      cell_type = (f"cell{i}" if self.arch_sharing == "cell"
                   else "reduce" if reduction else "normal")
      cells.append(SearchCell(self.space, cell_type, c, reduction_prev,
                              self.built_ops(cell_type), self.edge_loop, self.gate,
                              self.depthwise_impl, self.remat, self.partial_channels,
                              reduces=reduction))
      reduction_prev = reduction
    return tuple(cells)

  @property
  def replicas(self) -> dict[str, int]:
    """Number of cells of each type: the replication ``r_c`` of XNAS sec. 3.1."""
    return {t: sum(c.cell_type == t for c in self.cells) for t in self.space.cell_types}

  def default_masks(self) -> dict[str, jax.Array]:
    """The experts that exist: all, or the per-edge sets of space S1, less
    those a pruning removed (``op_mask``)."""
    types = self.space.cell_types
    masks = {t: np.asarray(self.space.available_mask(t)) for t in types}
    if self.op_mask is not None:
      masks = {t: masks[t] & np.asarray(self.op_mask[i], bool) for i, t in enumerate(types)}
    return {t: jnp.asarray(m) for t, m in masks.items()}

  def init(self, key: jax.Array, x: jax.Array) -> Variables:
    """Initializes network variables for NHWC images ``x`` (only its shape is used).

    The variable tree comes from Flax's own ``init`` run abstractly
    (``jax.eval_shape``); the values are then drawn with the initializers Flax
    would use (LeCun-normal kernels, zero biases and means, unit scales and
    variances) from a single truncated-normal draw.  One draw instead of one
    per leaf keeps this jit-compilable in well under a second, where a
    per-leaf ``init`` takes tens of seconds to compile on a CPU.
    """
    shapes = jax.eval_shape(self._init_structure, key, x)
    return _materialize(shapes, key)

  def _init_structure(self, key: jax.Array, x: jax.Array) -> Variables:
    stem = Stem(self.stem_multiplier * self.channels)
    keys = jax.random.split(key, self.num_cells + 2)
    v = stem.init(keys[0], x, True)
    params, stats = {"stem": v["params"]}, {"stem": v["batch_stats"]}
    s0 = s1 = jax.eval_shape(lambda: stem.apply(v, x, False))
    for i, cell in enumerate(self.cells):
      a0 = jnp.zeros(s0.shape, s0.dtype)
      a1 = jnp.zeros(s1.shape, s1.dtype)
      cv = cell.init(keys[i + 1], a0, a1)
      params[f"cell{i}"], stats[f"cell{i}"] = cv["params"], cv["batch_stats"]
      out = jax.eval_shape(
          lambda cv=cv, a0=a0, a1=a1, cell=cell: cell.apply(
              cv, a0, a1, jnp.zeros((self.space.num_edges, a0.shape[0], self.space.num_ops)),
              jnp.ones((self.space.num_edges, self.space.num_ops), bool),
              jax.random.key(0), False)[0])
      s0, s1 = s1, out
    head = Head(self.num_classes)
    params["head"] = head.init(keys[-1], jnp.zeros(s1.shape, s1.dtype))["params"]
    return {"params": params, "batch_stats": stats}

  def apply(self, variables: Variables, x: jax.Array,
            weights: Mapping[str, jax.Array],
            masks: Mapping[str, jax.Array] | None = None, *,
            train: bool = True, rng: jax.Array | None = None,
            ) -> tuple[jax.Array, dict]:
    """Computes logits.

    Args:
      variables: ``{"params", "batch_stats"}`` from ``init``.
      x: NHWC images ``[B, H, W, C_in]``.
      weights: per cell type, mixture weights ``u`` broadcastable to
        ``[replicas, B, num_edges, num_ops]``: ``[E, N]`` shares one set of
        weights (the usual case); a full ``[R, B, E, N]`` array gives each cell
        replica and each example its own copy, so that the gradient w.r.t. it
        holds per-replica, per-example rewards.  An optional entry
        ``weights["edges"]`` holds, per cell type, PC-DARTS's edge weights
        broadcastable to ``[replicas, B, num_edges]``.
      masks: per cell type, ``[E, N]`` bool of the live experts (default: all
        the experts the space has).
      train: use (and update) batch statistics.
      rng: key for the ``noise`` op of space S4.

    Returns:
      ``(logits, new_batch_stats)``.
    """
    params, stats = _split(variables)
    masks = dict(self.default_masks() if masks is None else masks)
    if rng is None and "noise" in self.space.ops:
      raise ValueError("space with a 'noise' op needs rng=")
    b = x.shape[0]
    full, edges = {}, {}
    for t in self.space.cell_types:
      r = max(self.replicas[t], 1)
      full[t] = jnp.broadcast_to(weights[t], (r, b, self.space.num_edges, self.space.num_ops))
      if "edges" in weights:
        edges[t] = jnp.broadcast_to(weights["edges"][t], (r, b, self.space.num_edges))
    stem = Stem(self.stem_multiplier * self.channels)
    s, st = _apply_module(stem, {"params": params["stem"], "batch_stats": stats["stem"]}, x, train)
    new_stats = {"stem": st}
    s0 = s1 = s
    seen = {t: 0 for t in self.space.cell_types}
    for i, cell in enumerate(self.cells):
      t = cell.cell_type
      u = jnp.swapaxes(full[t][seen[t]], 0, 1)  # [E, B, N]
      ew = jnp.swapaxes(edges[t][seen[t]], 0, 1) if edges else None  # [E, B]
      seen[t] += 1
      key = jax.random.fold_in(rng, i) if rng is not None else None
      out, new_stats[f"cell{i}"] = cell.apply(
          {"params": params[f"cell{i}"], "batch_stats": stats[f"cell{i}"]},
          s0, s1, u, masks[t], key, train, ew)
      s0, s1 = s1, out
    logits = Head(self.num_classes).apply({"params": params["head"]}, s1)
    return logits, new_stats
