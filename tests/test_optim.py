"""XNAS transformations against a NumPy loop of Algorithm 1, and the theory."""
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xnas_jax import optim


def algorithm1(rewards: np.ndarray, eta: float, bound: float, zeta: float = 1.0):
  """XNAS Alg. 1 for one forecaster, literally, in float64 NumPy.

  Returns per-step weights (before each update), final weights, active sets
  and the aggregated wipeout factor gamma_T (Lemma 2).
  """
  t_total, n = rewards.shape
  v = np.ones(n)
  active = np.ones(n, bool)
  before, masks, gamma = [], [], 1.0
  for t in range(1, t_total + 1):
    before.append(np.where(active, v, 0.0) / v[active].sum())
    r = np.clip(rewards[t - 1], -bound, bound)
    v = np.where(active, v * np.exp(eta * r), v)  # line 9, live experts only
    theta = v[active].max() * np.exp(-2 * eta * bound * (t_total - t) * zeta)  # line 11
    new_active = active & (v >= theta)  # line 12
    gamma *= 1 + v[active & ~new_active].sum() / v[new_active].sum()
    active = new_active
    masks.append(active.copy())
  return np.array(before), v, np.array(masks), gamma


def run_transform(tx, rewards):
  a = jnp.zeros(rewards.shape[1])
  state = jax.jit(tx.init)(a)
  update = jax.jit(tx.update)
  logs, masks = [], []
  for r in rewards:
    updates, state = update(jnp.asarray(-r, jnp.float32), state, a)  # g = -R
    a = optax.apply_updates(a, updates)
    logs.append(np.asarray(a))
    masks.append(np.asarray(optax.tree_utils.tree_get(state, "mask")))
  return np.array(logs), np.array(masks)


def test_reproduces_numpy_algorithm1():
  rng = np.random.default_rng(0)
  rewards = rng.uniform(-1, 1, (60, 5)) + np.array([0.3, 0, -0.2, 0.1, -0.5])
  eta, bound = 0.2, 1.0
  _, v, masks, _ = algorithm1(rewards, eta, bound)
  logs, got_masks = run_transform(optim.xnas(eta, bound, horizon=60), rewards)
  np.testing.assert_array_equal(got_masks, masks)
  np.testing.assert_allclose(np.exp(logs[-1]), v, rtol=1e-4)
  assert masks[-1].sum() < 5  # the test does exercise the wipeout


def test_exponentiated_gradient_step_by_hand():
  tx = optim.exponentiated_gradient(0.5)
  g = jnp.array([1.0, -2.0])
  updates, _ = tx.update(g, tx.init(g))
  np.testing.assert_allclose(updates, [-0.5, 1.0])  # a + eta R with R = -g


def test_clip_rewards():
  tx = optim.clip_rewards(1.5)
  out, _ = tx.update(jnp.array([-3.0, 0.2, 9.0]), tx.init(jnp.zeros(3)))
  np.testing.assert_allclose(out, [-1.5, 0.2, 1.5])


def test_wiped_expert_never_updates_or_returns():
  tx = optim.xnas(learning_rate=1.0, grad_bound=1.0, horizon=3)
  a = jnp.zeros(3)
  state = tx.init(a)
  # Expert 2 loses hard twice: wiped at t=2 (gap 2 * 1 * 1 * (3-2) = 2 < 2).
  for g in ([-1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]):
    u, state = tx.update(jnp.array(g), state, a)
    a = optax.apply_updates(a, u)
  mask = optax.tree_utils.tree_get(state, "mask")
  np.testing.assert_array_equal(mask, [True, True, False])
  frozen = a[2]
  u, state = tx.update(jnp.array([1.0, 1.0, -1.0]), state, a)  # a huge reward for 2
  assert u[2] == 0 and not optax.tree_utils.tree_get(state, "mask")[2]
  assert optax.apply_updates(a, u)[2] == frozen


def test_rewards_per_step_advances_the_clock():
  tx = optim.wipeout(0.1, 1.0, horizon=100, rewards_per_step=25)
  s = tx.init(jnp.zeros(2))
  _, s = tx.update(jnp.zeros(2), s, jnp.zeros(2))
  assert int(s.count) == 25


def test_inject_hyperparams_and_multi_transform():
  params = {"normal": jnp.zeros((3, 4)), "reduce": jnp.zeros((3, 4))}
  tx = optax.multi_transform(
      {"normal": optax.inject_hyperparams(optim.xnas)(learning_rate=0.1, grad_bound=1.0, horizon=10),
       "reduce": optim.xnas(0.3, 1.0, 10)},
      {"normal": "normal", "reduce": "reduce"})
  state = jax.jit(tx.init)(params)
  g = {"normal": -jnp.ones((3, 4)), "reduce": -jnp.ones((3, 4))}
  updates, state = jax.jit(tx.update)(g, state, params)
  np.testing.assert_allclose(updates["normal"], 0.1)
  np.testing.assert_allclose(updates["reduce"], 0.3)
  masks = optax.tree_utils.tree_get_all_with_path(state, "mask")
  assert len(masks) == 2


def test_theory_learning_rates_match_the_paper():
  """Sec. 3.2.2: CIFAR-10, 25k val images, 50 epochs, 6 normal / 2 reduction
  cells, 8 experts, L = 1 give eta_N = 7.5e-4 and eta_R = 1.3e-3."""
  t_n = optim.search_horizon(25_000, 50, 6)
  t_r = optim.search_horizon(25_000, 50, 2)
  assert t_n == 7_500_000
  assert round(optim.regret_optimal_learning_rate(8, t_n, 1.0), 5) == 0.00074
  assert round(optim.regret_optimal_learning_rate(8, t_r, 1.0), 4) == 0.0013
  eta = optim.regret_optimal_learning_rate(8, t_n, 1.0)
  # eq. 4: at eta*, eq. 3 equals L sqrt(2 T ln N) (1 - ln gamma / (2 ln N)).
  for gamma in (1.0, 3.0):
    np.testing.assert_allclose(
        optim.regret_bound(eta, t_n, 1.0, 8, gamma),
        math.sqrt(2 * t_n * math.log(8)) * (1 - math.log(gamma) / (2 * math.log(8))))
  with pytest.raises(ValueError, match="num_experts"):
    optim.regret_optimal_learning_rate(1, 10, 1.0)


_rewards = st.integers(2, 6).flatmap(lambda n: st.integers(1, 40).flatmap(
    lambda t: st.lists(st.lists(st.one_of(st.sampled_from([-1.0, 1.0, 0.0]),
                                          st.floats(-1.0, 1.0)), min_size=n, max_size=n),
                       min_size=t, max_size=t)))


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(rewards=_rewards, eta=st.floats(0.01, 2.0))
def test_theory_properties_on_bounded_reward_sequences(rewards, eta):
  """Lemma 1 (best expert survives), Lemma 2 (1 <= gamma_T < N), Theorem 1."""
  r = np.array(rewards)
  t_total, n = r.shape
  before, _, masks, gamma = algorithm1(r, eta, 1.0)
  cumulative = r.sum(axis=0)
  best = np.flatnonzero(cumulative >= cumulative.max() - 1e-9)
  assert masks[-1][best].any()  # Lemma 1
  assert 1.0 <= gamma < n  # Lemma 2
  # Theorem 1 for the linear auxiliary losses l'_t(f_i) = -R_t,i (eq. 18, 31).
  forecaster = -(before * r).sum()
  regret = forecaster - (-cumulative).min()
  assert regret <= optim.regret_bound(eta, t_total, 1.0, n, gamma) + 1e-9
  # And the transform agrees with the loop on the mask.
  _, got = run_transform(optim.xnas(eta, 1.0, t_total), r)
  np.testing.assert_array_equal(got[-1], masks[-1])
