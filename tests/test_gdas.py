"""GDAS: the straight-through Gumbel-softmax sample against its definition,
its temperature schedule, and a search step that runs only the sampled
expert of each edge."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_configs import tiny_config
from xnas_jax import search_setup
from xnas_jax import search_steps
from xnas_jax.arch_optimizers import gdas
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's


def test_the_temperature_falls_linearly_per_epoch_from_10_to_0_1():
  taus = [float(gdas.temperature(e * 7 + 3, 7, 5)) for e in range(5)]
  np.testing.assert_allclose(taus, [10.0, 7.525, 5.05, 2.575, 0.1], rtol=1e-5)


def test_straight_through_is_the_one_hot_sample_with_the_softmax_gradient():
  """Forward: exactly one-hot at argmax of p = softmax((log_softmax(a) + g) / tau).
  Backward: the gradient of c . p, checked by central differences in float64."""
  jax.config.update("jax_enable_x64", True)
  try:
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(3, 5)))
    mask = jnp.asarray([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 1, 1, 1, 1]], bool)
    g = jnp.asarray(-np.log(rng.exponential(size=(3, 5))))
    c = jnp.asarray(rng.normal(size=(3, 5)))
    tau = 0.7

    def p_np(a):  # the definition, in NumPy
      a = np.where(mask, a, -np.inf)
      logp = a - np.log(np.sum(np.exp(a - a.max(-1, keepdims=True)), -1, keepdims=True)) - \
          a.max(-1, keepdims=True)
      z = np.where(mask, (logp + g) / tau, -np.inf)
      e = np.exp(z - z.max(-1, keepdims=True))
      return e / e.sum(-1, keepdims=True)

    h = gdas.straight_through(gdas.gumbel_probs(a, mask, g, tau))
    p = p_np(np.asarray(a))
    np.testing.assert_array_equal(np.asarray(h), np.eye(5)[p.argmax(-1)])
    grad = jax.grad(lambda a: jnp.sum(c * gdas.straight_through(
        gdas.gumbel_probs(a, mask, g, tau))))(a)
    eps, num = 1e-6, np.zeros((3, 5))
    for i in range(3):
      for j in range(5):
        d = np.zeros((3, 5))
        d[i, j] = eps
        num[i, j] = (np.sum(c * p_np(np.asarray(a) + d)) -
                     np.sum(c * p_np(np.asarray(a) - d))) / (2 * eps)
    np.testing.assert_allclose(np.asarray(grad), num, rtol=1e-6, atol=1e-9)
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0)
  finally:
    jax.config.update("jax_enable_x64", False)


def test_a_step_runs_only_the_sampled_expert_of_each_edge():
  config = tiny_config()
  config.arch_optimizer.name = "gdas"
  search = search_setup.build_search(config)
  state = search_setup.init_state(search, jax.random.key(0))
  masks = search_setup.live_masks(search, state)
  key, step = jax.random.key(3), jnp.asarray(0)
  u = search.mixture(state["arch"], masks, key, step)
  run = search.arch_opt.run_masks(state["arch"], masks, key, step)
  for t in CELL_TYPES:
    assert np.asarray(run[t]).sum(-1).tolist() == [1] * search.net.space.num_edges
    np.testing.assert_array_equal(np.asarray(u[t]) == 1.0, np.asarray(run[t]))
  # Batch statistics change only for the experts that ran (cell 0 is normal).
  d, b = search.data, config.batch_size
  data = lambda split: tuple(jnp.asarray(x) for x in (split.images, split.labels, d.mean, d.std))
  fns = search_steps.step_functions(search)
  k_arch = search_steps._keys(state)[4]  # pylint: disable=protected-access
  ran = np.asarray(search.arch_opt.run_masks(state["arch"], masks, k_arch, state["step"])["normal"])
  old = jax.tree.map(np.asarray, state)  # the step donates the state's buffers
  new, metrics = search_steps.search_step(search, fns, state, data(d.train), data(d.val),
                                          jnp.arange(b), jnp.arange(b) + b)
  assert np.isfinite(np.asarray(metrics)).all()
  before, after = old["batch_stats"]["cell0"]["edges0"], new["batch_stats"]["cell0"]["edges0"]
  ops = search.net.space.ops
  for name in before:
    if not jax.tree.leaves(before[name]):  # skip_connect has no batch statistics
      continue
    changed = np.asarray(jax.tree.leaves(jax.tree.map(
        lambda x, y: np.abs(np.asarray(x) - np.asarray(y)).reshape(len(x), -1).max(-1),
        before[name], after[name]))).max(0) > 0
    np.testing.assert_array_equal(changed, ran[:, ops.index(name)], err_msg=name)
  # The architecture moved (its gradient reaches every live logit through p).
  assert not np.allclose(np.asarray(new["arch"]["normal"]), old["arch"]["normal"])
