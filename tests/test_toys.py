"""The toy studies assert the XNAS paper's claims (sec. 8), not just shapes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import toys


def test_update_terms_are_eq_44_and_eq_47_on_the_3d_problem():
  loss = toys.axes3d_loss()
  a = jnp.array([0.3, -0.5, 0.1])
  for t in (0, 40):
    p, g_u, g_a = toys.update_terms(loss, a, jnp.asarray(t))
    x, y, z = np.asarray(p)
    dx, dy, dz = (0.0, 0.0, 2.0) if t < 30 else (0.0, -1.0, -2.0)
    np.testing.assert_allclose(g_u, [dx, dy, dz], atol=1e-6)  # eq. 45-47
    np.testing.assert_allclose(g_a[2], z * ((x + y) * dz - x * dx - y * dy), atol=1e-6)  # eq. 44
    np.testing.assert_allclose(g_a[0], x * ((y + z) * dx - y * dy - z * dz), atol=1e-6)  # eq. 42
    # eq. 37 is the chain rule through the softmax.
    np.testing.assert_allclose(g_a, jax.grad(lambda a: loss(jax.nn.softmax(a), t))(a), atol=1e-6)


@pytest.mark.parametrize("method", toys.METHODS)
def test_applied_step_is_the_methods_update(method):
  r = toys.axes2d("quadratic", method, learning_rate=0.1, num_steps=2)
  x, y = np.asarray(r["p"][0])
  a0 = np.zeros(2)
  dx, dy = x - 1.0, y
  if method == "xnas":
    a1 = a0 - 0.1 * np.array([dx, dy])  # EG on dl/du (eq. 45-46)
  else:
    g = x * y * (dx - dy)  # eq. 52-53
    a1 = a0 - 0.1 * np.array([g, -g])
  e = np.exp(a1 - a1.max())
  np.testing.assert_allclose(r["p"][1], e / e.sum(), rtol=1e-5)


def test_3d_xnas_recovers_the_late_bloomer_more_than_gd():
  xnas, gd = toys.axes3d("xnas"), toys.axes3d("gd_softmax")
  assert float(xnas["final_p"][2]) > float(gd["final_p"][2])
  # GD's z term is attenuated by the shrunken z right after the switch; XNAS's is the raw gradient.
  assert abs(float(xnas["g_u"][30, 2])) == 2.0
  assert abs(float(gd["g_a"][30, 2])) < 0.1 * 2.0


def test_2d_gd_stalls_from_an_imbalanced_start_and_xnas_does_not():
  gd = toys.axes2d("linear_imbalanced", "gd_softmax")
  xnas = toys.axes2d("linear_imbalanced", "xnas")
  x0 = float(gd["p"][0, 0])
  assert float(gd["final_p"][0]) - x0 < 0.01
  # XNAS closes the logit gap at lr per step: x = sigmoid(-5 + 0.1 t).
  np.testing.assert_allclose(xnas["p"][:, 0], jax.nn.sigmoid(-5.0 + 0.1 * jnp.arange(50)), rtol=1e-4)
  assert float(toys.axes2d("linear_imbalanced", "xnas", num_steps=100)["final_p"][0]) > 0.99
  for problem in toys.AXES2D:
    assert float(toys.axes2d(problem, "xnas")["distance"][-1]) < float(
        toys.axes2d(problem, "gd_softmax")["distance"][-1])


def test_statistical_regret_matches_a_numpy_loop_on_the_same_rewards():
  key, n, steps = jax.random.key(5), 4, 30
  out = toys.statistical_selection(key, num_experts=n, num_steps=steps, num_runs=3, reward_std=1.0,
                                   learning_rate=0.2, grad_bound=1.5, method="xnas")
  wiped_any = False
  for run, k in enumerate(jax.random.split(key, 3)):
    k_bias, k_noise = jax.random.split(k)
    bias = np.asarray(jax.random.normal(k_bias, (n,)))
    noise = np.stack([np.asarray(jax.random.normal(kk, (n,))) for kk in jax.random.split(k_noise, steps)])
    regret, a, alive = toys.numpy_forecaster(bias + noise, 0.2, 1.5, "xnas")
    np.testing.assert_allclose(out["regrets"][run], regret, rtol=1e-4)
    assert bool(out["correct"][run]) == (np.argmax(np.where(alive, a, -np.inf)) == np.argmax(bias))
    wiped_any |= not alive.all()
  assert wiped_any  # the comparison covers the wipeout


def test_statistical_xnas_has_lower_regret_growing_slower_in_n():
  key = jax.random.key(0)
  res = {(m, n): toys.statistical_selection(key, num_experts=n, num_steps=300, num_runs=200, method=m)
         for m in toys.METHODS for n in (2, 8, 32)}
  rx = np.array([float(res["xnas", n]["regret"]) for n in (2, 8, 32)])
  rg = np.array([float(res["gd_softmax", n]["regret"]) for n in (2, 8, 32)])
  assert (rx < rg).all()
  assert rx[-1] / rx[0] < rg[-1] / rg[0]
  cx = np.array([float(res["xnas", n]["correct_fraction"]) for n in (2, 8, 32)])
  cg = np.array([float(res["gd_softmax", n]["correct_fraction"]) for n in (2, 8, 32)])
  assert (cx >= cg - 0.02).all()


def test_rate_sweep_is_the_study_at_each_rate():
  key = jax.random.key(4)
  sweep = toys.rate_sweep(key, (1, 64), num_experts=4, num_runs=50, num_steps=200)
  eta = toys.optim.regret_optimal_learning_rate(4, 200, 4.0)
  for method, r in sweep.items():
    np.testing.assert_allclose(r["rate"], [eta, 64 * eta], rtol=1e-6)
    for i, lr in enumerate(r["rate"]):
      direct = toys.statistical_selection(key, num_experts=4, num_steps=200, num_runs=50,
                                          learning_rate=float(lr), method=method)
      np.testing.assert_allclose(r["regret"][i], direct["regret"], rtol=1e-5)
      assert r["correct_fraction"][i] == pytest.approx(float(direct["correct_fraction"]))
