"""The evaluation network: structure, drop-path, parameter count, bad genotypes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import evalnet
from xnas_jax.genotype import Genotype
from xnas_jax.search_space import ALL_OPS

CONCAT = (2, 3, 4, 5)


def _genotype(normal_op="sep_conv_3x3", reduce_op="max_pool_3x3"):
  cell = lambda op: tuple((op if k % 2 else "skip_connect", k // 2 + k % 2) for k in range(8))
  return Genotype(cell(normal_op), CONCAT, cell(reduce_op), CONCAT)


def _init(net, shape=(2, 8, 8, 1)):
  k = jax.random.key(0)
  return net.init({"params": k, "dropout": k, "noise": k}, jnp.zeros(shape), True)


def test_reductions_at_one_and_two_thirds_double_the_channels():
  net = evalnet.EvalNetwork(_genotype(), 10, channels=4, num_cells=6)
  v = _init(net)
  # Cells 2 and 4 are reduction cells; a node has C channels, the cell 4C.
  width = lambda i: v["params"][f"cell{i}"]["pre1"]["Conv_0"]["kernel"].shape[-1]
  assert [width(i) for i in range(6)] == [4, 4, 8, 8, 16, 16]
  assert [i for i in range(6) if "Conv_1" in v["params"][f"cell{i}"]["pre0"]] == [3, 5]
  logits, aux = net.apply(v, jnp.zeros((2, 8, 8, 1)), True, 0.0,
                          rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])[0]
  assert logits.shape == aux.shape == (2, 10)
  logits, aux = net.apply(v, jnp.zeros((2, 8, 8, 1)), False)
  assert logits.shape == (2, 10) and aux is None  # no auxiliary head at test time


def test_parameter_count_matches_a_hand_count():
  # Parameter-free ops (pools) and skips: what has weights is the stem, the
  # preprocessing, the factorized reduces of stride-2 skips and the classifier.
  # Node j takes skip_connect from state j and a pool from state j + 1, so a
  # reduction cell has two stride-2 skips (from inputs 0 and 1).
  c, classes = 4, 10
  net = evalnet.EvalNetwork(_genotype("max_pool_3x3", "avg_pool_3x3"), classes, channels=c,
                            num_cells=3, auxiliary=False)
  bn = lambda ch: 2 * ch  # affine: scale and bias
  fr = lambda c_in, c_out: 2 * c_in * (c_out // 2) + bn(c_out)  # factorized reduce
  rcb = lambda c_in, c_out: c_in * c_out + bn(c_out)  # ReLU-Conv1x1-BN
  count = 9 * 1 * 3 * c + bn(3 * c)  # stem
  count += 2 * rcb(3 * c, c)  # cell 0, normal, C = c, inputs 3c and 3c
  count += rcb(3 * c, 2 * c) + rcb(4 * c, 2 * c) + 2 * fr(2 * c, 2 * c)  # cell 1, reduce
  count += fr(4 * c, 4 * c) + rcb(8 * c, 4 * c) + 2 * fr(4 * c, 4 * c)  # cell 2, after a reduce
  count += 16 * c * classes + classes  # classifier
  assert evalnet.parameter_count(_init(net)["params"]) == count


def test_drop_path_zeroes_whole_examples_and_keeps_the_mean():
  x = jnp.ones((20000, 2, 2, 3))
  y = evalnet.drop_path(x, jnp.float32(0.3), jax.random.key(0))
  per_example = np.asarray(y).reshape(20000, -1)
  assert np.all((per_example == 0).all(1) | np.isclose(per_example, 1 / 0.7).all(1))
  assert abs((per_example[:, 0] == 0).mean() - 0.3) < 0.015
  assert abs(per_example.mean() - 1.0) < 0.03
  np.testing.assert_array_equal(evalnet.drop_path(x, jnp.float32(0.0), jax.random.key(0)), x)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["normal"].pop(), "7 edges"),
    (lambda d: d["normal"].__setitem__(0, ["conv_9x9", 0]), "'conv_9x9'"),
    (lambda d: d["normal"].__setitem__(0, ["none", 0]), "'none'"),
    (lambda d: d["reduce"].__setitem__(2, ["skip_connect", 3]), "node 1 cannot take input 3"),
    (lambda d: d.__setitem__("normal_concat", [2, 9]), "state 9"),
])
def test_bad_genotypes_are_named(edit, message):
  d = _genotype().to_dict()
  edit(d)
  with pytest.raises(ValueError, match=message):
    evalnet.validate_genotype(Genotype.from_dict(d), ALL_OPS)


def _hand_count_imagenet(genotype, c, num_cells, classes):
  """DARTS's NetworkImageNet counted by hand, op by op: two stems, each
  cell's preprocessing (a factorized reduce after a smaller-map input) and
  operations (a separable conv is two depthwise-pointwise-BN stacks, a
  dilated one one stack, a stride-2 skip a factorized reduce; pools and
  stride-1 skips are free), and the classifier."""
  bn = lambda ch: 2 * ch
  fr = lambda c_in, c_out: 2 * c_in * (c_out // 2) + bn(c_out)
  rcb = lambda c_in, c_out: c_in * c_out + bn(c_out)
  stack = lambda k, ch: k * k * ch + ch * ch + bn(ch)
  op = {"sep_conv_3x3": lambda ch: 2 * stack(3, ch), "sep_conv_5x5": lambda ch: 2 * stack(5, ch),
        "dil_conv_3x3": lambda ch: stack(3, ch), "dil_conv_5x5": lambda ch: stack(5, ch)}
  count = 9 * 3 * (c // 2) + bn(c // 2) + 9 * (c // 2) * c + bn(c)  # stem0
  count += 9 * c * c + bn(c)  # stem1
  c_pp, c_p, cur, reduction_prev = c, c, c, True
  for i in range(num_cells):
    reduction = i in (num_cells // 3, 2 * num_cells // 3)
    cur = 2 * cur if reduction else cur
    count += (fr(c_pp, cur) if reduction_prev else rcb(c_pp, cur)) + rcb(c_p, cur)
    for name, src in (genotype.reduce if reduction else genotype.normal):
      if name in op:
        count += op[name](cur)
      elif name == "skip_connect" and reduction and src < 2:
        count += fr(cur, cur)
    c_pp, c_p, reduction_prev = c_p, 4 * cur, reduction
  return count + c_p * classes + classes


def test_imagenet_network_has_darts_v2s_parameter_count():
  """NetworkImageNet (14 cells, C=48, 1000 classes) with DARTS V2: 4,718,752
  parameters without the auxiliary head, as the release counts them (DARTS
  reports 4.7M); and a cell with stride-2 skips and 5x5 convs at small sizes."""
  from xnas_jax import published  # pylint: disable=import-outside-toplevel
  v2 = published.get("darts_v2")
  for genotype, c, cells, classes, size in ((v2, 48, 14, 1000, 224),
                                            (_genotype("sep_conv_5x5", "dil_conv_5x5"), 8, 5,
                                             10, 32)):
    net = evalnet.EvalNetwork(genotype, classes, c, cells, auxiliary=True, stem="imagenet")
    k = jax.random.key(0)
    shapes = jax.eval_shape(lambda net=net, size=size: net.init(
        {"params": k, "dropout": k}, jnp.zeros((1, size, size, 3)), True))
    want = _hand_count_imagenet(genotype, c, cells, classes)
    assert evalnet.parameter_count(shapes["params"]) == want
    if c == 48:
      assert want == 4718752
    assert "aux_head" in shapes["params"]  # ImageNet's auxiliary head, not counted
  variables = jax.eval_shape(lambda: _init(net, (2, 32, 32, 3)))
  logits, aux = jax.eval_shape(lambda v: net.apply(
      v, jnp.zeros((2, 32, 32, 3)), True, 0.0, rngs={"dropout": jax.random.key(1)},
      mutable=["batch_stats"])[0], variables)
  assert logits.shape == aux.shape == (2, 10)
