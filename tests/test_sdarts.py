"""SDARTS's perturbations against the release's formulas (SmoothDARTS's
``attacker/perturb.py`` and ``model_search.clip``), ported to NumPy loops here."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from xnas_jax import sdarts


def release_clip(w):
  """``Network.clip``: per edge, clamp to [0, 1], 1 at the argmax of an
  all-zero edge, divide by the sum (one edge at a time, as the release)."""
  w = np.array(w, np.float64)
  for line in w:
    top = line.argmax()
    np.clip(line, 0.0, 1.0, out=line)
    if line.sum() == 0.0:
      line[top] = 1.0
    line /= line.sum()
  return w


def test_epsilon_grows_linearly_from_0_03_to_0_3_over_the_epochs():
  steps, epochs = 10, 50
  for epoch in (0, 1, 25, 49):
    eps = float(sdarts.epsilon(epoch * steps + 3, steps, epochs))
    assert eps == pytest.approx(0.03 + (0.3 - 0.03) * epoch / epochs)


def test_project_is_the_release_clip():
  rng = np.random.default_rng(0)
  w = rng.uniform(-0.5, 1.5, (14, 8)).astype(np.float32)
  w[3] = -rng.uniform(0.1, 1.0, 8)  # all negative: the argmax gets 1
  mask = np.ones_like(w, bool)
  np.testing.assert_allclose(sdarts.project(jnp.asarray(w), jnp.asarray(mask)),
                             release_clip(w), rtol=1e-6)
  mask[:, 0] = False  # an expert that does not exist stays 0
  out = np.asarray(sdarts.project(jnp.asarray(w), jnp.asarray(mask)))
  assert (out[:, 0] == 0).all()
  np.testing.assert_allclose(out[:, 1:], release_clip(w[:, 1:]), rtol=1e-6)


def test_random_noise_is_uniform_in_the_ball_and_projected():
  eps = 0.2
  u = {"normal": jnp.full((200, 50), 1 / 50), "reduce": jnp.full((100, 50), 1 / 50)}
  masks = {t: jnp.ones(v.shape, bool) for t, v in u.items()}
  key = jax.random.key(3)
  delta = sdarts.noise(u, masks, key, eps)
  for t in u:
    d = np.asarray(delta[t]).ravel()
    assert d.min() >= -eps and d.max() <= eps
    assert stats.kstest(d, stats.uniform(loc=-eps, scale=2 * eps).cdf).pvalue > 1e-3
  assert not np.allclose(delta["normal"][:100], delta["reduce"])  # a key per cell type
  out = sdarts.random_perturbation(u, masks, key, eps)
  for t in u:
    np.testing.assert_allclose(out[t], release_clip(np.asarray(u[t] + delta[t])), rtol=1e-5)


def release_pgd(u0, start, loss, grad, eps, steps):
  """``Linf_PGD_alpha`` with ``p`` the simplex weights: the random start, then
  ``Linf_SGD`` steps on ``-loss`` (``p -= lr sign(grad(-loss))``), the
  difference clamped to the ball, ``clip``; the start kept if the loss fell."""
  p = release_clip(u0 + start)
  lr = 2 * eps / steps
  for _ in range(steps):
    p = p - lr * np.sign(-grad(p))
    p = release_clip(u0 + np.clip(p - u0, -eps, eps))
  return u0 if loss(u0) > loss(p) else p


def test_pgd_is_the_release_attack():
  rng = np.random.default_rng(1)
  c = rng.normal(size=(14, 8))
  u0 = np.asarray(jax.nn.softmax(jnp.asarray(rng.normal(size=(14, 8))), -1), np.float64)
  masks = {"normal": jnp.ones((14, 8), bool)}
  key, eps = jax.random.key(5), 0.1
  start = np.asarray(sdarts.noise({"normal": jnp.asarray(u0, jnp.float32)}, masks, key,
                                  eps)["normal"])
  # A smooth loss with a gradient of varying sign: sum(c * u^2) + sum(u log u)
  loss = lambda u: float(np.sum(c * u ** 2) + np.sum(u * np.log(np.maximum(u, 1e-12))))
  grad = lambda u: 2 * c * u + np.log(np.maximum(u, 1e-12)) + 1
  jloss = lambda u: (jnp.sum(c * u["normal"] ** 2)
                     + jnp.sum(u["normal"] * jnp.log(jnp.maximum(u["normal"], 1e-12))))
  out = sdarts.pgd_perturbation({"normal": jnp.asarray(u0, jnp.float32)}, masks, key, eps, jloss)
  expected = release_pgd(u0, start, loss, grad, eps, sdarts.PGD_STEPS)
  np.testing.assert_allclose(out["normal"], expected, atol=1e-5)
  assert loss(np.asarray(out["normal"], np.float64)) > loss(u0)


def test_pgd_keeps_the_unperturbed_point_when_the_attack_lowers_the_loss():
  u0 = jnp.full((6, 4), 0.25)
  masks = {"normal": jnp.ones((6, 4), bool)}
  peak = lambda u: -jnp.sum((u["normal"] - u0) ** 2)  # highest at u0: every step away lowers it
  out = sdarts.pgd_perturbation({"normal": u0}, masks, jax.random.key(0), 0.2, peak)
  np.testing.assert_array_equal(out["normal"], u0)


@pytest.mark.parametrize("changes,message", [
    ({"name": "darts_adam", "epsilon": 0.0}, "arch_optimizer.epsilon"),
    ({"name": "darts_adam", "epsilon": -0.1}, "arch_optimizer.epsilon"),
    ({"name": "sdarts_adv", "pgd_steps": 0}, "arch_optimizer.pgd_steps"),
    ({"name": "sdarts_rs", "epsilon_min": 0.5}, "epsilon_min 0.5 is larger than"),
    ({"name": "sdarts_rs", "perturb_mixture": "adversarial"}, "contradicts"),
    ({"name": "gdas", "perturb_mixture": "random"}, "samples one expert per edge"),
    ({"name": "darts_adam", "perturb_mixture": "gaussian"}, "perturb_mixture"),
    ({"name": "sgas", "sgas_criterion": 3}, "sgas_criterion"),
])
def test_bad_sdarts_and_sgas_options_are_one_line(changes, message):
  from xnas_jax import config_defaults, train  # pylint: disable=import-outside-toplevel
  c = config_defaults.base_config()
  for k, v in changes.items():
    c.arch_optimizer[k] = v
  with pytest.raises(train.ConfigError, match=message) as e:
    train.validate_config(c)
  assert "\n" not in str(e.value)


def test_sgas_refuses_partial_channels():
  from xnas_jax import config_defaults, train  # pylint: disable=import-outside-toplevel
  c = config_defaults.base_config()
  c.arch_optimizer.name, c.partial_channels = "sgas", 4
  with pytest.raises(train.ConfigError, match="cannot use PC-DARTS's edge normalization"):
    train.validate_config(c)
