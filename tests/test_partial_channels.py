"""Partial channels and edge normalization (PC-DARTS, Xu et al. 2020) against
hand computations: the cell against PC-DARTS's MixedOp written out in NumPy
(NCHW, as its release computes it), XNAS's rewards on a partial-channel edge
against their definition, the betas' gradient against autodiff through the
whole supernet, and the genotype against the release's ``_parse``."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import arch_optimizers
from xnas_jax import config_checks
from xnas_jax import edge_norm
from xnas_jax import genotype as genotype_lib
from xnas_jax import ops as ops_lib
from xnas_jax import search_setup
from xnas_jax import train
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's
NUM_INPUTS = get_search_space().num_inputs  # the DARTS cell's
from xnas_jax.supernet import SearchCell, channel_shuffle

from search_configs import FEW_OPS, tiny_config


def _torch_shuffle(x_nhwc: np.ndarray, groups: int) -> np.ndarray:
  """PC-DARTS's channel_shuffle, on NCHW as its release writes it."""
  x = np.transpose(x_nhwc, (0, 3, 1, 2))
  b, c, h, w = x.shape
  x = x.reshape(b, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(b, c, h, w)
  return np.transpose(x, (0, 2, 3, 1))


def _max_pool_2x2(x: np.ndarray) -> np.ndarray:
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def test_channel_shuffle_is_pc_darts_shuffle():
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 12)).astype(np.float32)
  for k in (2, 3, 4, 6):
    np.testing.assert_array_equal(channel_shuffle(jnp.asarray(x), k), _torch_shuffle(x, k))


def _preprocessed(cell, variables, s0, s1):
  p, st = variables["params"], variables["batch_stats"]
  pre0, pre1 = cell._preprocess()  # pylint: disable=protected-access
  run = lambda m, name, s: m.apply({"params": p[name], "batch_stats": st[name]}, s, True,
                                   mutable=["batch_stats"])[0]
  return [np.asarray(run(pre0, "pre0", s0)), np.asarray(run(pre1, "pre1", s1))]


def _expert(cell, variables, group_index, pos, name, stride, x):
  """One expert of one edge applied by itself to ``x`` (C/K channels)."""
  p, st = variables["params"], variables["batch_stats"]
  take = lambda t: jax.tree.map(lambda a: a[pos], t)
  v = {"params": take(p[f"edges{group_index}"].get(name, {})),
       "batch_stats": take(st[f"edges{group_index}"].get(name, {}))}
  module = ops_lib.make_op(name, cell.op_channels, stride)
  return np.asarray(module.apply(v, jnp.asarray(x), True, mutable=["batch_stats"])[0])


def _reference_pc_cell(cell, variables, s0, s1, u, mask, w):
  """PC-DARTS's Cell.forward with its MixedOp, in NumPy: every edge
  ``w_e * shuffle(concat(sum_i u_i f_i(x[:C/K]), pool(x[C/K:])))``."""
  k, ck = cell.partial_channels, cell.op_channels
  states = _preprocessed(cell, variables, s0, s1)
  nodes = {}
  for g, group in enumerate(cell.groups):
    for pos, e in enumerate(group.edge_ids):
      src, dst = cell.space.edges[e]
      x = states[src] if src < NUM_INPUTS else nodes[src]
      part, rest = x[..., :ck], x[..., ck:]
      total = 0.0
      for name in cell.built_ops:
        i = cell.space.ops.index(name)
        if name == "none" or not mask[e, i]:
          continue
        total = total + u[e][:, i, None, None, None] * _expert(cell, variables, g, pos, name,
                                                                 group.stride, part)
      if group.stride > 1:
        rest = _max_pool_2x2(rest)
      total = total + np.zeros(rest.shape[:3] + (ck,), np.float32)
      out = _torch_shuffle(np.concatenate([total, rest], axis=-1), k)
      nodes[dst] = nodes.get(dst, 0.0) + w[e][:, None, None, None] * out
  return np.concatenate([nodes[d] for d in sorted(nodes)], axis=-1)


@pytest.mark.parametrize("cell_type", ["normal", "reduce"])
def test_cell_is_pc_darts_mixed_op(cell_type):
  space = get_search_space("s3")  # none, skip_connect, sep_conv_3x3
  cell = SearchCell(space, cell_type, channels=4, reduction_prev=False, built_ops=space.ops,
                    partial_channels=2)
  s0 = jax.random.normal(jax.random.key(1), (3, 4, 4, 6))
  s1 = jax.random.normal(jax.random.key(2), (3, 4, 4, 6))
  variables = cell.init(jax.random.key(0), s0, s1)
  # The experts are built for C/K channels.
  assert variables["params"]["edges0"]["sep_conv_3x3"]["DilConv_0"]["Conv_1"]["kernel"].shape \
      == (len(cell.groups[0].edge_ids), 1, 1, 2, 2)
  u = jax.random.uniform(jax.random.key(3), (space.num_edges, 3, space.num_ops))
  w = jax.random.uniform(jax.random.key(4), (space.num_edges, 3), minval=0.2, maxval=1.0)
  mask = np.ones((space.num_edges, space.num_ops), bool)
  mask[5, 2] = mask[0, 1] = False
  mask[3, :] = False  # an edge without a live expert still passes its bypassed channels
  out, _ = cell.apply(variables, s0, s1, u, jnp.asarray(mask), None, True, w)
  ref = _reference_pc_cell(cell, variables, s0, s1, np.asarray(u), mask, np.asarray(w))
  np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)


def test_xnas_reward_on_a_partial_channel_edge():
  """R_i = -dloss/du_i on an edge into the last node from input 0: the loss
  gradient at the edge's C/K computed channels (after undoing the shuffle),
  times w, dotted with the expert's output there, per example."""
  space = get_search_space("darts")  # the cell output is the nodes' concatenation
  cell = SearchCell(space, "normal", channels=4, reduction_prev=False, built_ops=space.ops,
                    partial_channels=2)
  s0 = jax.random.normal(jax.random.key(1), (2, 4, 4, 6))
  s1 = jax.random.normal(jax.random.key(2), (2, 4, 4, 6))
  variables = cell.init(jax.random.key(0), s0, s1)
  u = jax.random.uniform(jax.random.key(3), (space.num_edges, 2, space.num_ops))
  w = jax.random.uniform(jax.random.key(4), (space.num_edges, 2), minval=0.2, maxval=1.0)
  mask = jnp.ones((space.num_edges, space.num_ops), bool)
  r = jax.random.normal(jax.random.key(5), (2, 4, 4, 16))
  g_u = jax.grad(lambda u: jnp.sum(r * cell.apply(variables, s0, s1, u, mask, None, True,
                                                  w)[0]))(u)
  last = 5
  e = next(k for k in space.incoming(last) if space.edges[k][0] == 0)
  x0 = _preprocessed(cell, variables, s0, s1)[0]
  grad_out = np.asarray(r[..., 12:16])  # the last node's slice of the cell output
  # Undo the shuffle: shuffled channel j*K + g holds unshuffled channel g*C/K + j.
  unshuffled = _torch_shuffle(grad_out, 2)  # with K = 2 the shuffle is its own inverse
  np.testing.assert_array_equal(g_u[e, :, space.ops.index("none")], 0.0)
  for name in space.ops[1:]:
    i = space.ops.index(name)
    f = _expert(cell, variables, 0, e, name, 1, x0[..., :2])
    want = np.asarray(w)[e] * np.sum(unshuffled[..., :2] * f, axis=(1, 2, 3))
    np.testing.assert_allclose(g_u[e, :, i], want, rtol=1e-4, atol=1e-5)


def test_node_softmax():
  space = get_search_space("darts")
  beta = jax.random.normal(jax.random.key(0), (space.num_edges,))
  w = np.asarray(edge_norm.node_softmax(space, beta))
  for dst in range(NUM_INPUTS, NUM_INPUTS + 4):
    idx = space.incoming(dst)
    b = np.asarray(beta)[idx]
    np.testing.assert_allclose(w[idx], np.exp(b) / np.exp(b).sum(), rtol=1e-6)


def _released_parse(weights, weights2, ops):
  """PC-DARTS's genotype()._parse: W[j, :] *= W2[j], then the two edges
  with the largest max over ops other than none, each with its best op."""
  gene, n, start = [], 2, 0
  none = ops.index("none")
  for _ in range(4):
    end = start + n
    w = weights[start:end].copy()
    for j in range(n):
      w[j, :] = w[j, :] * weights2[start + j]
    edges = sorted(range(n), key=lambda x: -max(w[x][k] for k in range(len(w[x])) if k != none))[:2]
    for j in sorted(edges):
      best = max((k for k in range(len(w[j])) if k != none), key=lambda k: w[j][k])
      gene.append((ops[best], j))
    start, n = end, n + 1
  return tuple(gene)


def test_genotype_ranks_edges_by_edge_weight_times_strength():
  space = get_search_space("darts")
  rng = np.random.default_rng(0)
  flipped = 0
  for _ in range(50):
    u = rng.dirichlet(np.ones(space.num_ops), size=space.num_edges)
    beta = rng.normal(size=space.num_edges) * 2
    w = np.asarray(edge_norm.node_softmax(space, jnp.asarray(beta, jnp.float32)), np.float64)
    cell = genotype_lib.discretize_cell(u, space, edge_weights=w)
    assert cell == _released_parse(u, w, list(space.ops))
    flipped += cell != genotype_lib.discretize_cell(u, space)
  assert flipped > 10  # the edge weights decide the topology in many draws


def _pc_search(name):
  c = tiny_config(partial_channels=2)
  c.arch_optimizer.name = name
  return c


@pytest.mark.parametrize("name", ["xnas", "darts_adam"])
def test_betas_gradient_pulls_the_copies_back_through_the_node_softmax(name):
  """The wrapped optimizer's gradient w.r.t. the betas is the gradient of
  ``sum_copies <g, w(beta)> / B`` (the batch's mean loss, linearized at the
  per-copy ``dloss/dw`` the supernet hands over) plus the correction: w.r.t.
  ``w`` for XNAS (pulled back with it), w.r.t. ``beta`` for DARTS; the
  experts' part is the inner optimizer's own."""
  space = get_search_space("darts")
  c = tiny_config(partial_channels=2, op_set="darts")
  c.arch_optimizer.name = name
  replicas, b = {"normal": 1, "reduce": 2}, 4
  shape = arch_optimizers.SearchShape(space, replicas,
                                      {t: np.ones((14, 8), bool) for t in CELL_TYPES}, b, 3, 2)
  opt = arch_optimizers.build(c, shape)
  arch = arch_optimizers.init_params(opt, space, jax.random.key(0))
  keys = iter(jax.random.split(jax.random.key(1), 20))
  arch["edges"] = {t: jax.random.normal(next(keys), (14,)) for t in CELL_TYPES}
  masks = {t: jnp.ones((14, 8), bool) for t in CELL_TYPES}
  g_u = {t: jax.random.normal(next(keys), (replicas[t], b, 14, 8)) for t in CELL_TYPES}
  g_u["edges"] = {t: jax.random.normal(next(keys), (replicas[t], b, 14)) for t in CELL_TYPES}
  corr = {t: jnp.zeros((14, 8)) for t in CELL_TYPES}
  corr["edges"] = {t: jax.random.normal(next(keys), (14,)) for t in CELL_TYPES}
  got = opt.gradient(arch, masks, g_u, corr, None, 0)

  def w_of(beta):  # the softmax over each node's incoming edges, written out
    parts = []
    for dst in range(2, 6):
      idx = space.incoming(dst)
      e = jnp.exp(beta[jnp.asarray(idx)] - jnp.max(beta[jnp.asarray(idx)]))
      parts.append(e / jnp.sum(e))
    return jnp.concatenate(parts)  # incoming edges are consecutive, node by node

  xnas = name == "xnas"

  def surrogate(betas):
    total = 0.0
    for t in CELL_TYPES:
      w = w_of(betas[t])
      total += jnp.sum(g_u["edges"][t] * w) / b
      if xnas:
        total += jnp.sum(corr["edges"][t] * w)
    return total
  want = jax.grad(surrogate)(arch["edges"])
  for t in CELL_TYPES:
    expect = want[t] + (0.0 if xnas else corr["edges"][t])
    np.testing.assert_allclose(got["edges"][t], expect, rtol=1e-5, atol=1e-6)
  inner = arch_optimizers.get(name).build(c, shape)
  a_inner = {t: arch[t] for t in CELL_TYPES}
  expect = inner.gradient(a_inner, masks, {t: g_u[t] for t in CELL_TYPES},
                          {t: corr[t] for t in CELL_TYPES}, None, 0)
  for t in CELL_TYPES:
    np.testing.assert_allclose(got[t], expect[t], rtol=1e-6)


def test_pc_darts_search_trains_the_betas_and_selects_by_them(tmp_path):
  c = tiny_config(partial_channels=2, epochs=1, op_set=FEW_OPS)
  c.arch_optimizer.name = "darts_adam"
  result = train.train_and_evaluate(c, str(tmp_path), progress=False)
  state = result["state"]
  assert state["params"]["cell0"]["edges0"]["sep_conv_3x3"]["DilConv_0"]["Conv_1"][
      "kernel"].shape[-1] == c.channels // 2
  search = search_setup.build_search(c)
  init = search_setup.init_state(search, jax.random.key(c.seed))
  for t in CELL_TYPES:
    assert not np.allclose(state["arch"]["edges"][t], init["arch"]["edges"][t])
  u = search.mixture(state["arch"], search_setup.live_masks(search, state))
  w = {t: np.asarray(u["edges"][t]) for t in CELL_TYPES}
  want = genotype_lib.discretize({t: np.asarray(u[t]) for t in CELL_TYPES}, search.net.space,
                                 edge_weights=w)
  assert result["genotype"] == want


@pytest.mark.parametrize("overrides,message", [
    ({"partial_channels": 3}, "partial_channels 3 does not divide channels 4"),
    ({"partial_channels": 2, "selection": "perturbation"}, "selection 'perturbation'"),
    ({"edge_norm": True, "selection": "perturbation"}, "selection 'perturbation'"),
    ({"partial_channels": 0}, "partial_channels must be a positive integer, got 0"),
])
def test_bad_partial_channels(overrides, message):
  with pytest.raises(config_checks.ConfigError, match=message):
    search_setup.validate_config(tiny_config(**overrides))
