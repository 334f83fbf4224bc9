"""The supernet's mixture against a hand computation on a tiny cell."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import ops as ops_lib
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's
NUM_INPUTS = get_search_space().num_inputs  # the DARTS cell's
from xnas_jax.supernet import SearchCell, Supernet


def _reference_cell(cell: SearchCell, variables, s0, s1, u, mask):
  """Edge by edge, op by op, in plain Python: x_k = sum_j sum_i u_i f_i(x_j)."""
  p, st = variables["params"], variables["batch_stats"]
  pre0, pre1 = cell._preprocess()  # pylint: disable=protected-access
  states = [pre0.apply({"params": p["pre0"], "batch_stats": st["pre0"]}, s0, True,
                       mutable=["batch_stats"])[0],
            pre1.apply({"params": p["pre1"], "batch_stats": st["pre1"]}, s1, True,
                       mutable=["batch_stats"])[0]]
  nodes = {}
  for g, group in enumerate(cell.groups):
    for pos, k in enumerate(group.edge_ids):
      src, dst = cell.space.edges[k]
      x = states[src] if src < NUM_INPUTS else nodes[src]
      total = 0.0
      for name in cell.built_ops:
        i = cell.space.ops.index(name)
        if name == "none" or not mask[k, i]:
          continue
        module = ops_lib.make_op(name, cell.channels, group.stride)
        take = lambda t: jax.tree.map(lambda a: a[pos], t)
        v = {"params": take(p[f"edges{g}"].get(name, {})),
             "batch_stats": take(st[f"edges{g}"].get(name, {}))}
        out = module.apply(v, x, True, mutable=["batch_stats"])[0]
        total = total + u[k][:, i, None, None, None] * out
      nodes[dst] = nodes.get(dst, 0.0) + total
  return jnp.concatenate([nodes[d] for d in sorted(nodes)], axis=-1)


@pytest.mark.parametrize("cell_type", ["normal", "reduce"])
def test_cell_mixture_matches_hand_computation(cell_type):
  space = get_search_space("s3")  # none, skip_connect, sep_conv_3x3
  cell = SearchCell(space, cell_type, channels=4, reduction_prev=False, built_ops=space.ops)
  key = jax.random.key(0)
  s0 = jax.random.normal(jax.random.key(1), (3, 4, 4, 6))
  s1 = jax.random.normal(jax.random.key(2), (3, 4, 4, 6))
  variables = cell.init(key, s0, s1)
  # Non-trivial (random, positive) weights per edge and per example.
  u = jax.random.uniform(jax.random.key(3), (space.num_edges, 3, space.num_ops))
  mask = np.ones((space.num_edges, space.num_ops), bool)
  mask[5, 2] = mask[0, 1] = False  # switch a conv and a skip off

  out, _ = cell.apply(variables, s0, s1, u, jnp.asarray(mask), None, True)
  ref = _reference_cell(cell, variables, s0, s1, u, mask)
  np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)

  # Gradients w.r.t. the mixture weights (the XNAS rewards) agree too, and a
  # switched-off expert gets none.
  c = jax.random.normal(jax.random.key(4), out.shape)
  g = jax.grad(lambda u: jnp.sum(c * cell.apply(variables, s0, s1, u, jnp.asarray(mask),
                                                None, True)[0]))(u)
  g_ref = jax.grad(lambda u: jnp.sum(c * _reference_cell(cell, variables, s0, s1, u, mask)))(u)
  np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)
  assert np.all(g[5, :, 2] == 0) and np.all(g[0, :, 1] == 0)


def test_reward_is_gradient_projection_on_expert_output():
  """R_i = -grad_p(loss) . f_i on a single edge (XNAS Alg. 1, line 8)."""
  space = get_search_space("s2")
  cell = SearchCell(space, "normal", channels=4, reduction_prev=False, built_ops=space.ops)
  s = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
  variables = cell.init(jax.random.key(0), s, s)
  u = jnp.full((space.num_edges, 2, space.num_ops), 0.5)
  c = jax.random.normal(jax.random.key(4), (2, 4, 4, 16))
  loss = lambda u: jnp.sum(c * cell.apply(variables, s, s, u, jnp.ones((14, 2), bool), None, True)[0])
  g = jax.grad(loss)(u)
  # Edge 0 (input 0 -> node 0) feeds node 0 only, and node 0's channels are
  # the first 4 of the concatenated output, but node 0 also feeds later edges;
  # isolate edge 13 (node 2 -> node 3): node 3 is output-only.
  x1 = jax.grad(lambda s1: 0.0)(s)  # placeholder to keep shapes explicit
  del x1
  pre = cell._preprocess()[1]  # pylint: disable=protected-access
  del pre
  # d loss / d p_13 = c[..., 12:16] (node 3 block); f_i = op_i(node 2).
  out_nodes = _node_values(cell, variables, s, u)
  f_skip = out_nodes[4]  # skip_connect(node 2) = node 2
  np.testing.assert_allclose(g[13, :, 0], jnp.sum(c[..., 12:16] * f_skip, axis=(1, 2, 3)),
                             rtol=1e-4, atol=1e-4)


def _node_values(cell, variables, s, u):
  """States 0..5 of the cell (via the reference), for the projection test."""
  mask = np.ones((cell.space.num_edges, cell.space.num_ops), bool)
  full = _reference_cell(cell, variables, s, s, u, mask)
  c = cell.channels
  nodes = {2 + j: full[..., j * c:(j + 1) * c] for j in range(4)}
  return nodes


@pytest.mark.parametrize("op_set", ["darts", "xnas", "s1", "s4"])
def test_supernet_shapes_and_per_copy_gradients(op_set):
  space = get_search_space(op_set)
  # Grouped depthwise convs: this test runs op by op, where the shifted form's
  # k*k slices cost dispatches; the shifted form is checked in a cell above.
  net = Supernet(space, num_classes=5, channels=4, num_cells=3, depthwise_impl="grouped")
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  variables = net.init(jax.random.key(1), x)
  e, n = space.num_edges, space.num_ops
  shared = {t: jnp.full((e, n), 1.0 / n) for t in CELL_TYPES}
  rng = jax.random.key(7)
  logits, stats = net.apply(variables, x, shared, rng=rng)
  assert logits.shape == (2, 5) and np.all(np.isfinite(logits))
  assert jax.tree.structure(stats) == jax.tree.structure(variables["batch_stats"])
  # The gradient w.r.t. per-replica, per-example copies sums to the gradient
  # w.r.t. the shared weights.
  full = {t: jnp.broadcast_to(shared[t], (max(net.replicas[t], 1), 2, e, n)) for t in CELL_TYPES}
  f = lambda w: jnp.sum(net.apply(variables, x, w, rng=rng)[0] ** 2)
  g_shared, g_full = jax.jit(jax.grad(f))(shared), jax.jit(jax.grad(f))(full)
  for t in CELL_TYPES:
    np.testing.assert_allclose(g_full[t].sum(axis=(0, 1)), g_shared[t], rtol=1e-4, atol=1e-5)
  assert net.replicas == {"normal": 1, "reduce": 2}


def test_masks_change_values_not_compilations():
  space = get_search_space("s2")
  net = Supernet(space, num_classes=3, channels=4, num_cells=3)
  x = jnp.ones((2, 8, 8, 1))
  variables = net.init(jax.random.key(1), x)
  w = {t: jnp.full((14, 2), 0.5) for t in CELL_TYPES}
  f = jax.jit(lambda m: net.apply(variables, x, w, m)[0])
  all_on = {t: jnp.ones((14, 2), bool) for t in CELL_TYPES}
  some_off = {t: jnp.ones((14, 2), bool).at[:, 1].set(False) for t in CELL_TYPES}
  a, b = f(all_on), f(some_off)
  assert f._cache_size() == 1  # pylint: disable=protected-access
  assert not np.allclose(a, b)
  # Building without the op everywhere masked gives the same function.
  pruned = Supernet(space, 3, 4, 3, active_ops=(("skip_connect",), ("skip_connect",)))
  pv = jax.tree.map(lambda a: a, variables)
  for i in range(3):
    for g in ("edges0", "edges1"):
      for coll in ("params", "batch_stats"):
        pv[coll][f"cell{i}"].get(g, {}).pop("sep_conv_3x3", None)
  np.testing.assert_allclose(pruned.apply(pv, x, w, some_off)[0], b, rtol=1e-5, atol=1e-6)


def test_noise_op_needs_a_key():
  net = Supernet(get_search_space("s4"), 3, 4, 3)
  x = jnp.ones((2, 8, 8, 1))
  v = net.init(jax.random.key(0), x)
  w = {t: jnp.full((14, 2), 0.5) for t in CELL_TYPES}
  with pytest.raises(ValueError, match="rng"):
    net.apply(v, x, w)
  a = net.apply(v, x, w, rng=jax.random.key(1))[0]
  b = net.apply(v, x, w, rng=jax.random.key(2))[0]
  assert not np.allclose(a, b)
