"""Searching under a budget: the cost of every expert (hand counts, and a
count of the multiply-adds in the operations' own programs), the found
network's cost against evalnet's, the penalty's gradient, and a search that
the penalty pushes under its target."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_configs import tiny_config
from xnas_jax import budget
from xnas_jax import evalnet
from xnas_jax import ops
from xnas_jax import published
from xnas_jax import train
from xnas_jax.genotype import Genotype
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's


def test_hand_counts():
  # sep_conv_3x3, C = 16, 32x32, stride 1: twice (3*3*16 + 16*16) * 32*32.
  assert budget.op_macs("sep_conv_3x3", 16, 32, 32, 1) == 2 * (9 * 16 + 256) * 1024 == 819_200
  # dil_conv_5x5, stride 2 on 32x32 -> 16x16: (5*5*16 + 16*16) * 16*16.
  assert budget.op_macs("dil_conv_5x5", 16, 32, 32, 2) == (25 * 16 + 256) * 256 == 167_936
  # skip_connect with stride 2 is a factorized reduce: two 1x1 convs 16 -> 8 on 16x16.
  assert budget.op_macs("skip_connect", 16, 32, 32, 2) == 2 * 16 * 8 * 256
  assert budget.op_macs("max_pool_3x3", 16, 32, 32, 1) == budget.op_macs("none", 16, 9, 9, 2) == 0
  assert budget.op_params("sep_conv_3x3", 16, 1) == 2 * (9 * 16 + 16 * 16 + 2 * 16)  # + BN affine


def _jaxpr_macs(jaxpr) -> int:
  """Multiply-adds of every convolution and dot product in a jaxpr (and its sub-jaxprs)."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      out = eqn.outvars[0].aval.shape
      kernel = eqn.invars[1].aval.shape  # HWIO
      total += math.prod(out) * kernel[0] * kernel[1] * kernel[2]
    elif eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    for value in eqn.params.values():
      for sub in (value if isinstance(value, (tuple, list)) else (value,)):
        inner = getattr(sub, "jaxpr", None)
        if inner is not None:
          total += _jaxpr_macs(getattr(inner, "jaxpr", inner))
  return total


@pytest.mark.parametrize("stride", [1, 2])
def test_op_macs_count_the_operations_own_programs(stride, monkeypatch):
  monkeypatch.setattr(ops, "DEPTHWISE_AUTO", {})  # depthwise convs as convolutions
  x = jnp.zeros((1, 12, 10, 8))
  for name in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "skip_connect",
               "max_pool_3x3", "avg_pool_3x3"):
    module = ops.make_op(name, 8, stride, affine=True, pool_bn=False)
    variables = module.init(jax.random.key(0), x, False)
    jaxpr = jax.make_jaxpr(lambda x: module.apply(variables, x, False))(x).jaxpr
    assert _jaxpr_macs(jaxpr) == budget.op_macs(name, 8, 12, 10, stride), name


@pytest.mark.parametrize("name", ["darts_v2", "xnas"])
def test_a_genotypes_cost_is_its_evaluation_networks(name, monkeypatch):
  monkeypatch.setattr(ops, "DEPTHWISE_AUTO", {})
  g = published.get(name)
  net = evalnet.EvalNetwork(g, 10, channels=12, num_cells=8, auxiliary=False)
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda: net.init({"params": jax.random.key(0)}, x, False))
  assert budget.genotype_cost(g, "params", (32, 32, 3), 10, 12, 8) == pytest.approx(
      evalnet.parameter_count(variables["params"]) / 1e6, abs=1e-12)
  jaxpr = jax.make_jaxpr(lambda v, x: net.apply(v, x, False))(variables, x).jaxpr
  assert budget.genotype_cost(g, "flops", (32, 32, 3), 10, 12, 8) == pytest.approx(
      _jaxpr_macs(jaxpr) / 1e6, abs=1e-12)
  # At the papers' size: DARTS V2's 3.3M parameters (its Table 1).
  if name == "darts_v2":
    assert budget.genotype_cost(g, "params", (32, 32, 3), 10) == pytest.approx(3.349342)


def test_the_expected_cost_and_the_penalty_gradient():
  space = get_search_space("darts", "darts")
  fixed, per_edge = budget.edge_costs(space, "flops", (8, 8, 1), 10, 8, 5)
  costs = budget.EdgeCosts("flops", fixed, per_edge, target=1.0, weight=2.0)
  u = {t: jnp.full((14, 8), 1 / 8) for t in CELL_TYPES}
  e = fixed + sum(float(np.sum(per_edge[t])) / 8 for t in CELL_TYPES)
  assert float(budget.expected_cost(costs, u)) == pytest.approx(e, rel=1e-6)
  g = budget.penalty_gradient(costs, u)
  over = e > costs.target
  for t in CELL_TYPES:
    np.testing.assert_allclose(np.asarray(g[t]), over * 2.0 * per_edge[t] / 1.0, rtol=1e-6)
  under = costs._replace(target=10 * e)
  assert all(float(jnp.abs(v).max()) == 0 for v in budget.penalty_gradient(under, u).values())


def test_a_search_under_a_tight_flops_budget_finds_a_cheaper_cell(tmp_path):
  """DARTS on the tiny digits search: a strong penalty drives the mixture
  towards the parameter-free ops, and the found cells cost less than
  without it."""
  def run(metric, path):
    c = tiny_config(epochs=1)
    c.arch_optimizer.name = "darts_adam"
    c.arch_optimizer.learning_rate = 3e-2
    c.budget.metric, c.budget.target, c.budget.weight = metric, 0.01, 50.0
    c.budget.channels, c.budget.num_cells = 8, 5
    if metric == "none":
      c.budget.target = 0.0
    return train.train_and_evaluate(c, str(tmp_path / path), progress=False)["summary"]
  free = run("none", "free")
  tight = run("flops", "tight")
  assert "genotype_flops_m" not in free
  free_flops = budget.genotype_cost(Genotype.from_dict(free["genotype"]), "flops",
                                    (8, 8, 1), 10, 8, 5)
  assert tight["genotype_flops_m"] < free_flops
  lines = [l for l in open(tmp_path / "tight" / "metrics.jsonl")]
  assert "expected_flops_m" in lines[-1]


def test_a_budget_needs_a_positive_target_and_a_known_metric():
  c = tiny_config()
  c.budget.metric = "flops"
  with pytest.raises(train.ConfigError, match="budget.target must be > 0 with budget.metric"):
    train.validate_config(c)
  c.budget.metric = "latency"
  with pytest.raises(train.ConfigError, match="unknown budget.metric 'latency'"):
    train.validate_config(c)
