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
