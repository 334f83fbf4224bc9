import numpy as np
import pytest

from xnas_jax import genotype as gl
from xnas_jax.search_space import get_search_space


def _weights(space, strong):
  """Uniform weights except the (edge, op) -> weight entries in ``strong``."""
  w = np.full((space.num_edges, space.num_ops), 0.01)
  for (e, op), v in strong.items():
    w[e, space.ops.index(op)] = v
  return w


def test_magnitude_selection_on_hand_made_weights():
  space = get_search_space("darts")
  # Edges: node0: 0,1; node1: 2,3,4; node2: 5..8; node3: 9..13.
  strong = {
      (0, "sep_conv_3x3"): 0.9, (1, "none"): 0.99, (1, "skip_connect"): 0.3,
      (2, "dil_conv_5x5"): 0.5, (3, "max_pool_3x3"): 0.2, (4, "sep_conv_5x5"): 0.6,
      (7, "avg_pool_3x3"): 0.7, (8, "skip_connect"): 0.8,
      (13, "dil_conv_3x3"): 0.4, (9, "sep_conv_3x3"): 0.35,
  }
  w = _weights(space, strong)
  cell = gl.discretize_cell(w, space)
  # none is ignored both for edge strength and for the op choice.
  assert cell[0:2] == (("sep_conv_3x3", 0), ("skip_connect", 1))
  assert cell[2:4] == (("dil_conv_5x5", 0), ("sep_conv_5x5", 2))
  assert cell[4:6] == (("avg_pool_3x3", 2), ("skip_connect", 3))
  assert cell[6:8] == (("sep_conv_3x3", 0), ("dil_conv_3x3", 4))


def test_wiped_experts_are_never_selected():
  space = get_search_space("xnas")
  w = _weights(space, {(0, "sep_conv_3x3"): 0.9, (0, "max_pool_3x3"): 0.5})
  alive = np.ones_like(w, bool)
  alive[0, space.ops.index("sep_conv_3x3")] = False
  cell = gl.discretize_cell(w, space, alive)
  assert cell[0] == ("max_pool_3x3", 0)


def test_json_round_trip_and_darts_form():
  space = get_search_space("darts")
  rng = np.random.default_rng(0)
  g = gl.discretize({"normal": rng.random((14, 8)), "reduce": rng.random((14, 8))}, space)
  text = g.to_json()
  assert gl.Genotype.from_json(text) == g
  d = g.to_dict()
  assert set(d) == {"normal", "normal_concat", "reduce", "reduce_concat"}
  assert d["normal_concat"] == [2, 3, 4, 5] and len(d["normal"]) == 8
  with pytest.raises(ValueError, match="not a genotype"):
    gl.Genotype.from_json('{"normal": []}')


def test_cell_depth():
  assert gl.cell_depth([("a", 0), ("b", 1), ("c", 2), ("d", 3)]) == 1.5
  assert gl.cell_depth([("a", 0), ("b", 1)] * 4) == 0.5


def _final_wipeout(space, leader_log_weight, seed=0):
  """XNAS at t = T: one live expert per edge (the leader, log-weight given per
  edge), the wiped experts frozen below it."""
  rng = np.random.default_rng(seed)
  a = np.full((space.num_edges, space.num_ops), -1.5)  # the same denominators on every edge
  leaders = rng.integers(0, space.num_ops, space.num_edges)
  alive = np.zeros(a.shape, bool)
  for k, lead in enumerate(leaders):
    a[k, lead], alive[k, lead] = leader_log_weight[k], True
  return a, alive


def test_xnas_topology_after_the_final_wipeout_follows_the_log_weights():
  """Every edge has u = 1 over its live experts at t = T; the strength of eq. 1
  (normalized over all experts) still tells the edges apart, and here the
  rewards favoured node-to-node edges."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from xnas_jax import arch as arch_lib  # pylint: disable=import-outside-toplevel
  space = get_search_space("xnas")
  strength = np.array([2.0 if s >= 2 else 0.3 for s, _ in space.edges])
  strength += 0.01 * np.arange(space.num_edges)  # distinct
  a, alive = _final_wipeout(space, strength)
  u = np.asarray(arch_lib.masked_softmax(jnp.asarray(a), jnp.ones(a.shape, bool)))
  notes = []
  cell = gl.discretize_cell(u, space, alive, notes=notes)
  # Node 3 takes 2 and its stronger input (1: later edges got +0.01).
  assert [src for _, src in cell] == [0, 1, 1, 2, 2, 3, 3, 4]
  assert gl.cell_depth(cell) == 2.0 and notes == []
  # Normalized over the live experts only, every edge has strength 1: the old bug.
  u_live = np.asarray(arch_lib.masked_softmax(jnp.asarray(a), jnp.asarray(alive)))
  assert np.allclose(u_live.max(1), 1.0)


def test_selection_depends_on_strengths_not_on_edge_order():
  space = get_search_space("darts")
  rng = np.random.default_rng(3)
  node = 5  # incoming from 0, 1, 2, 3, 4
  incoming = space.incoming(node)
  base = rng.random(len(incoming)) + 0.1
  for _ in range(10):
    perm = rng.permutation(len(incoming))
    w = np.full((space.num_edges, space.num_ops), 0.01)
    for pos, k in enumerate(incoming):
      w[k, space.ops.index("sep_conv_3x3")] = base[perm[pos]]
    cell = gl.discretize_cell(w, space)
    top2 = sorted(np.argsort(-base[perm])[:2])
    assert [src for _, src in cell[6:8]] == [space.edges[incoming[i]][0] for i in top2]


def test_ties_are_reported():
  space = get_search_space("xnas")
  w = np.full((space.num_edges, space.num_ops), 0.1)  # every edge and op equal
  notes = []
  gl.discretize_cell(w, space, notes=notes, cell_type="normal")
  assert any(n.startswith("tie: node 3 of the normal cell edges from") for n in notes)
  assert any("several operations share the largest weight" for n in notes)


@pytest.mark.parametrize("op_set", ["darts", "s3"])
def test_an_edge_where_only_none_survived_still_gives_two_inputs(op_set):
  space = get_search_space(op_set)
  w = np.full((space.num_edges, space.num_ops), 0.1)
  alive = np.ones(w.shape, bool)
  none = space.ops.index("none")
  for k, (src, dst) in enumerate(space.edges):  # node 2's edge from 1, node 3's from 0 and 1
    if (src, dst) in ((1, 2), (0, 3), (1, 3)):
      alive[k] = False
      alive[k, none] = True
      w[k, none] = 0.9
  w[space.edges.index((1, 2)), space.ops.index("skip_connect")] = 0.3
  notes = []
  cell = gl.discretize_cell(w, space, alive, notes=notes, cell_type="normal")
  assert len(cell) == 8
  assert cell[0:2] == (cell[0], ("skip_connect", 1))  # the fallback: its strongest other op
  assert sorted(src for _, src in cell[2:4]) == [1, 2] or sorted(src for _, src in cell[2:4]) == [0, 2]
  assert any("node 2 of the normal cell edge from 1: only 'none' survived" in n for n in notes)
  assert all(op != "none" for op, _ in cell)
