"""What a search hands back follows the papers: XNAS's eq. 4 rates with the
forecasters' own expert counts and sec. 3.1's per-cell-type horizons and
bounds, and genotypes read from eq. 1's weights after the final wipeout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import search_metrics
from xnas_jax import search_setup
from xnas_jax import selection
from xnas_jax import genotype as genotype_lib
from xnas_jax import optim
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's
from search_configs import tiny_config


@pytest.mark.parametrize("op_set,experts", [("xnas", 7), ("darts", 8), ("s1", 2)])
def test_theory_rate_uses_the_experts_each_forecaster_has(op_set, experts):
  search = search_setup.build_search(tiny_config(op_set=op_set))
  for t in CELL_TYPES:
    r = search.net.replicas[t]
    horizon = optim.search_horizon(search.steps_per_epoch * 16, 2, r)
    assert search.arch_opt.horizons[t] == horizon
    assert search.arch_opt.learning_rates[t] == pytest.approx(
        optim.regret_optimal_learning_rate(experts, horizon, 1.0))


def test_batch_mean_rewards_have_per_cell_type_bounds():
  config = tiny_config()
  config.arch_optimizer.per_example_rewards = False
  search = search_setup.build_search(config)
  steps = search.steps_per_epoch * config.epochs
  for t in CELL_TYPES:
    r = search.net.replicas[t]
    assert search.arch_opt.rewards_per_step[t] == 1 and search.arch_opt.horizons[t] == steps
    assert search.arch_opt.reward_bounds[t] == r * config.arch_optimizer.grad_bound
    assert search.arch_opt.learning_rates[t] == pytest.approx(
        optim.regret_optimal_learning_rate(7, steps, r * 1.0))
  assert search.arch_opt.reward_bounds["normal"] != search.arch_opt.reward_bounds["reduce"]


def _set_masks(state, masks):
  def put(path, leaf):
    names = [getattr(p, "name", getattr(p, "key", None)) for p in path]
    if "mask" in names and leaf.dtype == jnp.bool_:
      return jnp.asarray(masks[next(n for n in names if n in CELL_TYPES)])
    return leaf
  return dict(state, arch_opt_state=jax.tree_util.tree_map_with_path(put, state["arch_opt_state"]))


def test_search_genotype_after_the_final_wipeout_is_not_decided_by_edge_order():
  """One live expert per edge (t = T), log-weights that favour node-to-node
  edges: the search's own genotype keeps them, in metrics and at the end."""
  search = search_setup.build_search(tiny_config())
  space = search.net.space
  state = search_setup.init_state(search, jax.random.key(0))
  arch, masks = {}, {}
  for t in CELL_TYPES:
    a = np.full((space.num_edges, space.num_ops), -3.0, np.float32)
    m = np.zeros(a.shape, bool)
    for k, (src, _) in enumerate(space.edges):
      lead = (k + 3) % space.num_ops
      a[k, lead] = (2.0 if src >= 2 else 0.5) + 0.01 * k
      m[k, lead] = True
    arch[t], masks[t] = jnp.asarray(a), m
  state = _set_masks(dict(state, arch=arch), masks)
  genotype = selection.magnitude(search, state)
  for t in CELL_TYPES:
    cell = genotype.edges(t)
    assert [src for _, src in cell] == [0, 1, 1, 2, 2, 3, 3, 4]
    assert genotype_lib.cell_depth(cell) == 2.0
    for (op, src), j in zip(cell, np.repeat(np.arange(2, 6), 2)):
      k = space.edges.index((src, j))
      assert op == space.ops[(k + 3) % space.num_ops]  # the surviving expert
  metrics = search_metrics.epoch_metrics(search, state, np.ones((2, 4)))
  assert metrics["genotype"] == genotype.to_dict()
