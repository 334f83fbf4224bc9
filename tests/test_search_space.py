import numpy as np
import pytest

from xnas_jax import search_space as ss


def test_darts_topology_has_14_edges_ordered_by_node():
  space = ss.get_search_space("darts")
  assert space.num_edges == 14
  assert space.edges[:2] == ((0, 2), (1, 2))
  dsts = [d for _, d in space.edges]
  assert dsts == sorted(dsts)
  for j in range(4):
    assert [s for s, d in space.edges if d == j + 2] == list(range(j + 2))


def test_fixed_topology_feeds_each_node_from_input0_and_previous_state():
  space = ss.get_search_space("darts", "fixed")
  assert space.edges == ((0, 2), (1, 2), (0, 3), (2, 3), (0, 4), (3, 4), (0, 5), (4, 5))


def test_op_sets():
  assert ss.get_search_space("darts").ops[0] == "none"
  assert len(ss.get_search_space("darts").ops) == 8
  xnas = ss.get_search_space("xnas")
  assert "none" not in xnas.ops and len(xnas.ops) == 7 and xnas.cell_output == "conv1x1"
  assert ss.get_search_space("s2").ops == ("skip_connect", "sep_conv_3x3")
  assert ss.get_search_space("s3").ops == ("none", "skip_connect", "sep_conv_3x3")
  assert ss.get_search_space("s4").ops == ("noise", "sep_conv_3x3")


def test_s1_has_two_ops_per_edge():
  space = ss.get_search_space("s1")
  for t in space.cell_types:
    mask = space.available_mask(t)
    assert mask.shape == (14, space.num_ops)
    np.testing.assert_array_equal(mask.sum(axis=1), 2)
  assert not space.available_mask("normal")[:, space.ops.index("avg_pool_3x3")].any()


@pytest.mark.parametrize("bad", [("nope", "darts"), ("darts", "ring")])
def test_unknown_names_raise_one_line(bad):
  with pytest.raises(ValueError, match=repr(bad[0]) if bad[0] == "nope" else repr(bad[1])):
    ss.get_search_space(*bad)


def test_reduction_layers_and_replicas():
  assert ss.reduction_layers(8) == (2, 5)
  assert ss.cell_counts(8) == {"normal": 6, "reduce": 2}
  assert ss.reduction_layers(5) == (1, 3)
