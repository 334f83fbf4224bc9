"""DrNAS: Dirichlet samples, their reparameterized gradient, the KL regularizer,
and DrNAS / frozen-alpha searches end to end."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from xnas_jax import search_setup
from xnas_jax import drnas, train
from search_configs import tiny_config

jax.config.update("jax_enable_x64", False)


def _arch(key, shape=(14, 7)):
  k1, k2 = jax.random.split(key)
  return {"normal": jax.random.normal(k1, shape), "reduce": jax.random.normal(k2, shape)}


def test_samples_lie_on_the_simplex_and_respect_the_mask():
  arch = _arch(jax.random.key(0))
  masks = {"normal": jnp.ones((14, 7), bool),
           "reduce": jnp.ones((14, 7), bool).at[:, 2].set(False).at[3, :5].set(False)}
  for k in range(5):
    u = drnas.sample_weights(jax.random.key(k), arch, masks)
    for t in ("normal", "reduce"):
      assert np.all(np.asarray(u[t]) >= 0)
      np.testing.assert_allclose(np.asarray(u[t]).sum(-1), 1.0, rtol=1e-5)
      assert np.all(np.asarray(u[t])[~np.asarray(masks[t])] == 0)
  mean = drnas.mean_weights(arch, masks)
  beta = np.asarray(jax.nn.elu(arch["normal"]) + 1)
  np.testing.assert_allclose(mean["normal"], beta / beta.sum(-1, keepdims=True), rtol=1e-5)


def test_reparameterized_gradient_matches_finite_differences_of_the_expectation():
  # f(theta) = sum_i c_i theta_i^2 has E f = sum_i c_i beta_i (beta_i + 1) / (beta0 (beta0 + 1)).
  b = jnp.array([0.3, -0.5, 1.2, 0.0])
  c = jnp.array([1.0, -2.0, 0.5, 3.0])
  mask = {"normal": jnp.ones((1, 4), bool), "reduce": jnp.ones((1, 4), bool)}

  def sampled_f(b, key):
    u = drnas.sample_weights(key, {"normal": b[None], "reduce": b[None]}, mask)["normal"][0]
    return jnp.sum(c * u ** 2)

  keys = jax.random.split(jax.random.key(1), 200_000)
  mc_grad = np.asarray(jnp.mean(jax.vmap(jax.grad(sampled_f), (None, 0))(b, keys), axis=0))

  def expectation(b):  # NumPy, float64
    beta = np.where(b > 0, b, np.expm1(b)) + 1.0
    b0 = beta.sum()
    return float(np.sum(np.asarray(c, np.float64) * beta * (beta + 1)) / (b0 * (b0 + 1)))

  b64, h = np.asarray(b, np.float64), 1e-5
  fd = np.array([(expectation(b64 + h * e) - expectation(b64 - h * e)) / (2 * h)
                 for e in np.eye(4)])
  np.testing.assert_allclose(mc_grad, fd, atol=0.01 * np.abs(fd).max())


def test_kl_matches_a_monte_carlo_estimate_and_its_gradient_finite_differences():
  alpha, prior = np.array([0.7, 2.5, 1.3]), np.ones(3)
  x = stats.dirichlet(alpha).rvs(400_000, random_state=np.random.default_rng(0))
  x = np.clip(x, 1e-300, None)
  x /= x.sum(1, keepdims=True)
  mc = np.mean(stats.dirichlet(alpha).logpdf(x.T) - stats.dirichlet(prior).logpdf(x.T))
  kl = float(drnas.dirichlet_kl(jnp.asarray(alpha, jnp.float32), jnp.asarray(prior, jnp.float32)))
  assert abs(kl - mc) < 0.01 * abs(mc) + 2e-3
  assert abs(float(drnas.dirichlet_kl(jnp.ones(3) * 2.0, jnp.ones(3) * 2.0))) < 1e-6

  arch = {"normal": jnp.array([[0.4, -0.3, 1.1]]), "reduce": jnp.array([[-1.0, 0.2, 0.0]])}
  g = jax.grad(drnas.kl_regularizer)(arch)
  h = 1e-3
  for t in ("normal", "reduce"):
    for i in range(3):
      plus = dict(arch, **{t: arch[t].at[0, i].add(h)})
      minus = dict(arch, **{t: arch[t].at[0, i].add(-h)})
      fd = (drnas.kl_regularizer(plus) - drnas.kl_regularizer(minus)) / (2 * h)
      np.testing.assert_allclose(g[t][0, i], fd, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("name", ["drnas", "frozen"])
def test_drnas_and_frozen_searches_run(name, tmp_path):
  c = tiny_config(epochs=1)
  c.arch_optimizer.name = name
  c.arch_optimizer.learning_rate = 6e-4
  result = train.train_and_evaluate(c, str(tmp_path), progress=False)
  arch = result["state"]["arch"]
  if name == "frozen":  # uniform, and never moved
    for t in ("normal", "reduce"):
      assert np.all(np.asarray(arch[t]) == 0)
    assert result["summary"]["entropy_normal"] == pytest.approx(1.0)
  else:
    search = search_setup.build_search(c)
    init = search_setup.init_state(search, jax.random.key(c.seed))["arch"]
    assert not np.allclose(np.asarray(arch["normal"]), np.asarray(init["normal"]))
  assert len(result["genotype"].normal) == 8


def test_drnas_with_a_second_order_gradient_is_refused():
  c = tiny_config(arch_gradient="amended")
  c.arch_optimizer.name = "drnas"
  with pytest.raises(train.ConfigError, match="'amended'"):
    train.validate_config(c)


def test_drnas_follows_the_released_recipe():
  """xiangning-chen/DrNAS: Adam 6e-4, betas (0.5, 0.999), reg_type "l2" (Adam's
  decay at reg_scale, no KL) by default, architecture steps after 10 of 50
  epochs, the architecture step first."""
  from xnas_jax import arch_optimizers
  c = tiny_config(epochs=50)
  c.arch_optimizer.name = "drnas"
  opt = search_setup.build_search(c).arch_opt
  assert opt.warmup_epochs == 10 and opt.step_order == arch_optimizers.ARCH_FIRST
  arch = _arch(jax.random.key(0))
  g = _arch(jax.random.key(1))
  updates, _ = opt.tx.update(g, opt.tx.init(arch), arch)
  for t in ("normal", "reduce"):  # Adam's first step: m_hat = g', v_hat = g'^2
    g2 = np.asarray(g[t]) + 1e-3 * np.asarray(arch[t])
    np.testing.assert_allclose(updates[t], -6e-4 * g2 / (np.abs(g2) + 1e-8), rtol=1e-5)
  # No KL term under "l2"; under "kl" the gradient is reg_scale x dKL/db and
  # Adam has no decay.
  masks = {t: jnp.ones((14, 7), bool) for t in ("normal", "reduce")}
  zeros = lambda shape: {t: jnp.zeros(shape) for t in ("normal", "reduce")}
  grad = opt.gradient(arch, masks, zeros((1, 2, 14, 7)), zeros((14, 7)), None)
  assert all(float(jnp.abs(grad[t]).max()) == 0 for t in grad)
  c.arch_optimizer.reg_type, c.arch_optimizer.reg_scale = "kl", 0.5
  opt = search_setup.build_search(c).arch_opt
  grad = opt.gradient(arch, masks, zeros((1, 2, 14, 7)), zeros((14, 7)), None)
  kl = jax.grad(lambda a: 0.5 * drnas.kl_regularizer(a, 1.0))(arch)
  for t in grad:
    np.testing.assert_allclose(grad[t], kl[t], rtol=1e-5, atol=1e-7)
  updates, _ = opt.tx.update(g, opt.tx.init(arch), arch)
  np.testing.assert_allclose(updates["normal"], -6e-4 * np.sign(g["normal"]), rtol=1e-4)


def test_no_architecture_step_during_the_warmup():
  from xnas_jax import search_steps
  c = tiny_config(epochs=2)
  c.arch_optimizer.name, c.arch_optimizer.warmup_epochs = "drnas", 1
  search = search_setup.build_search(c)
  fns = search_steps.step_functions(search)
  state = search_setup.init_state(search, jax.random.key(0))
  d, b = search.data, c.batch_size
  data = lambda split: tuple(jnp.asarray(a) for a in (split.images, split.labels, d.mean, d.std))
  idx = jnp.arange(b)
  for step, moves in ((0, False), (search.steps_per_epoch - 1, False),
                      (search.steps_per_epoch, True)):
    before = jax.tree.map(np.asarray, state)
    new, _ = search_steps.search_step(search, fns, dict(jax.tree.map(jnp.copy, state),
                                                        step=jnp.int32(step)),
                                      data(d.train), data(d.val), idx, idx)
    same = [np.array_equal(a, np.asarray(n)) for a, n in zip(
        jax.tree.leaves((before["arch"], before["arch_opt_state"])),
        jax.tree.leaves((new["arch"], new["arch_opt_state"])))]
    assert (not all(same)) == moves, step
    assert not all(np.array_equal(a, np.asarray(n)) for a, n in zip(  # weight steps run
        jax.tree.leaves(before["params"]), jax.tree.leaves(new["params"])))
