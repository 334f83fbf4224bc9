"""The depthwise convolution's implementations against each other and a NumPy loop."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import ops, shifted_ops

CASES = [  # (hw, channels, kernel, dilation, stride)
    (7, 3, 3, 1, 1), (8, 2, 5, 1, 2), (9, 3, 3, 2, 1), (8, 4, 5, 2, 2), (5, 2, 3, 1, 2),
]


def _numpy_depthwise(x, w, stride, dilation, pad):
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  w = np.asarray(w, np.float64)[:, :, 0, :]
  k = w.shape[0]
  b, h, wd, c = x.shape
  ho = (h - dilation * (k - 1) - 1) // stride + 1
  wo = (wd - dilation * (k - 1) - 1) // stride + 1
  out = np.zeros((b, ho, wo, c))
  for i in range(ho):
    for j in range(wo):
      for p in range(k):
        for q in range(k):
          out[:, i, j, :] += x[:, i * stride + p * dilation, j * stride + q * dilation, :] * w[p, q]
  return out


@pytest.mark.parametrize("hw,c,k,d,s", CASES)
def test_depthwise_impls_agree_in_value_and_gradient(hw, c, k, d, s):
  kx, kw, kg = jax.random.split(jax.random.key(hw * 100 + k * 10 + d + s), 3)
  x = jax.random.normal(kx, (2, hw, hw, c))
  w = jax.random.normal(kw, (k, k, 1, c))
  pad = d * (k - 1) // 2
  ref = _numpy_depthwise(x, w, s, d, pad)
  probe = jax.random.normal(kg, ref.shape)
  grads = {}
  for impl in ("grouped", "shifted", "dense"):
    y = ops.depthwise_conv(x, w, s, d, pad, impl)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5, err_msg=impl)
    grads[impl] = jax.jit(jax.grad(
        lambda x, w, impl=impl: jnp.sum(ops.depthwise_conv(x, w, s, d, pad, impl) * probe),
        argnums=(0, 1)))(x, w)
  for impl in ("shifted", "dense"):
    for g, g_ref in zip(grads[impl], grads["grouped"]):
      np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4, err_msg=impl)


def test_auto_is_the_recorded_choice_and_bad_names_are_refused():
  assert ops.resolve_depthwise_impl("auto", 3, "cpu") == "shifted"
  assert ops.resolve_depthwise_impl("auto", 5, "cpu") == "shifted"
  assert ops.resolve_depthwise_impl("auto", 5, "gpu") == "grouped"
  assert ops.resolve_depthwise_impl("shifted", 3, "gpu") == "shifted"
  with pytest.raises(ValueError, match="'fft'"):
    ops.resolve_depthwise_impl("fft", 3)


def test_dil_conv_keeps_flax_conv_variable_paths():
  """DilConv's variables are where ``nn.Conv(feature_group_count=C)`` put them,
  so checkpoints and weight ports keep working."""
  v = ops.DilConv(6, 3, 1, 2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))
  shapes = jax.tree.map(jnp.shape, v["params"])
  assert shapes == {"Conv_0": {"kernel": (3, 3, 1, 4)}, "Conv_1": {"kernel": (1, 1, 4, 6)}}


@pytest.mark.parametrize("hw,c,s", [(7, 3, 1), (8, 2, 2), (9, 3, 2), (6, 4, 1)])
def test_separable_max_pool_matches_reduce_window_with_ties(hw, c, s):
  """Values and gradients of ``shifted_ops.max_pool_3x3`` against
  ``nn.max_pool``, on inputs rounded to halves so that most windows hold
  ties: the gradient goes to the same (first, row-major) maximum."""
  kx, kg = jax.random.split(jax.random.key(hw * 10 + s))
  x = jnp.round(jax.random.normal(kx, (2, hw, hw, c)) * 2) / 2
  ref = lambda x: nn.max_pool(x, (3, 3), (s, s), padding=((1, 1), (1, 1)))
  probe = jax.random.normal(kg, ref(x).shape)
  y = shifted_ops.max_pool_3x3(x, s)
  np.testing.assert_array_equal(y, ref(x))
  grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(f(x) * probe)))(x)
  g, g_ref = grad(lambda x: shifted_ops.max_pool_3x3(x, s)), grad(ref)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-6)
  # Every output's gradient lands on exactly one input: the totals agree.
  np.testing.assert_allclose(g.sum(), probe.sum(), rtol=1e-5)


def test_shifted_conv_gradient_under_vmap():
  """The hand-written backward batched (as the multi-seed step runs it)."""
  x = jax.random.normal(jax.random.key(0), (3, 2, 6, 6, 2))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 1, 2))
  f = lambda x, w: jnp.sum(jnp.sin(shifted_ops.depthwise_conv(x, w, 2, 2, 2)))
  g = jax.jit(jax.vmap(jax.grad(f, argnums=(0, 1))))(x, w)
  for i in range(3):
    gi = jax.grad(lambda x, w: jnp.sum(jnp.sin(ops.depthwise_conv(x, w, 2, 2, 2, "grouped"))),
                  argnums=(0, 1))(x[i], w[i])
    for a, b in zip(g, gi):
      np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5)


def test_separable_max_pool_has_a_forward_mode_derivative():
  """The second-order hypergradients take a jvp of the gradient (custom_jvp,
  not custom_vjp): Hessian-vector products agree with nn.max_pool's."""
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
  v = jax.random.normal(jax.random.key(1), x.shape)
  def hvp(pool):
    grad = jax.grad(lambda x: jnp.sum(jnp.sin(pool(x)) ** 2))
    return jax.jvp(grad, (x,), (v,))[1]
  ref = hvp(lambda x: nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1))))
  np.testing.assert_allclose(hvp(lambda x: shifted_ops.max_pool_3x3(x, 2)), ref,
                             rtol=1e-5, atol=1e-5)
