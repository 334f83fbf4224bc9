import jax
import jax.numpy as jnp
import numpy as np

from xnas_jax import arch


def test_mixture_weights_renormalize_over_live_experts():
  a = {"normal": jnp.array([[0.0, 1.0, 2.0]]), "reduce": jnp.zeros((1, 3))}
  m = {"normal": jnp.array([[True, False, True]]), "reduce": jnp.ones((1, 3), bool)}
  u = arch.mixture_weights(a, m)
  e0, e2 = 1.0, np.exp(2.0)
  np.testing.assert_allclose(u["normal"], [[e0 / (e0 + e2), 0.0, e2 / (e0 + e2)]], rtol=1e-6)
  np.testing.assert_allclose(u["reduce"], [[1 / 3] * 3], rtol=1e-6)


def test_gradient_through_wiped_entry_is_finite_and_zero():
  m = {"normal": jnp.array([[True, False]]), "reduce": jnp.array([[True, True]])}
  def f(a):
    return jnp.sum(arch.mixture_weights(a, m)["normal"] * jnp.array([[1.0, 5.0]]))
  a = {"normal": jnp.array([[0.0, -jnp.inf]]), "reduce": jnp.zeros((1, 2))}
  g = jax.grad(f)(a)
  assert np.all(np.isfinite(g["normal"])) and g["normal"][0, 1] == 0.0


def test_normalized_entropy_eq54_55():
  u = jnp.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25] * 4])
  expected = np.mean([np.log(2) / np.log(4), 0.0, 1.0])
  np.testing.assert_allclose(arch.normalized_entropy(u), expected, rtol=1e-6)
