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


def _numpy_avg_pool(x, s):
  """3x3 average over the in-image pixels of each window (padding 1), a loop."""
  b, h, w, c = x.shape
  ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
  out = np.zeros((b, ho, wo, c))
  for i in range(ho):
    for j in range(wo):
      win = x[:, max(s * i - 1, 0):s * i + 2, max(s * j - 1, 0):s * j + 2, :]
      out[:, i, j] = win.mean(axis=(1, 2))
  return out


@pytest.mark.parametrize("h,w,s", [(7, 9, 1), (8, 8, 2), (9, 7, 2), (1, 2, 1), (2, 2, 2)])
def test_separable_avg_pool_matches_a_numpy_loop_and_reduce_window(h, w, s):
  """``shifted_ops.avg_pool_3x3`` (two 3-tap sums over the counted pixels)
  against a NumPy loop, and its gradient against ``nn.avg_pool``'s."""
  kx, kg = jax.random.split(jax.random.key(h * 10 + s))
  x = jax.random.normal(kx, (2, h, w, 3))
  y = shifted_ops.avg_pool_3x3(x, s)
  np.testing.assert_allclose(y, _numpy_avg_pool(np.asarray(x, np.float64), s), rtol=1e-5, atol=1e-6)
  ref = lambda x: nn.avg_pool(x, (3, 3), (s, s), padding=((1, 1), (1, 1)), count_include_pad=False)
  probe = jax.random.normal(kg, y.shape)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * probe))(x)
  np.testing.assert_allclose(grad(lambda x: shifted_ops.avg_pool_3x3(x, s)), grad(ref),
                             rtol=1e-5, atol=1e-6)


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


def _numpy_batch_norm(x):
  """Training-mode BN over all axes but the last, in float64."""
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1))
  mean, var = x.mean(axes), x.var(axes)
  return (x - mean) / np.sqrt(var + 1e-5), mean, var


@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_matches_flax_and_numpy_in_value_stats_and_gradients(affine):
  """ops.BatchNorm (hand-written derivative) against nn.BatchNorm (automatic
  derivative) on values, running statistics, parameter and input gradients,
  and the Hessian-vector product the second-order hypergradients take; the
  value and statistics also against a NumPy float64 computation."""
  x = jax.random.normal(jax.random.key(0), (4, 5, 5, 3)) * 2.0 + 0.5
  ours = ops.batch_norm(affine, train=True)
  ref = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5,
                     use_scale=affine, use_bias=affine)
  v = ours.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, ref.init(jax.random.key(1), x))
  if affine:
    v = {**v, "params": {"scale": jnp.array([0.5, 1.5, -2.0]), "bias": jnp.array([0.1, 0.0, -0.3])}}
  y, st = ours.apply(v, x, mutable=["batch_stats"])
  y_ref, st_ref = ref.apply(v, x, mutable=["batch_stats"])
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), st, st_ref)
  v_eval = {**v, **st}  # evaluation mode: the running statistics
  np.testing.assert_allclose(ops.batch_norm(affine, train=False).apply(v_eval, x),
                             ref.clone(use_running_average=True).apply(v_eval, x),
                             rtol=1e-5, atol=1e-5)
  x_hat, mean, var = _numpy_batch_norm(x)
  np.testing.assert_allclose(st["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(st["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
  if not affine:
    np.testing.assert_allclose(y, x_hat, rtol=1e-4, atol=1e-5)

  w = jax.random.normal(jax.random.key(2), x.shape)
  def loss(module, params, x):
    out, _ = module.apply({**v, "params": params}, x, mutable=["batch_stats"])
    return jnp.sum(jnp.tanh(out) * w)
  for argnums in (1, 2):
    g = jax.grad(loss, argnums)(ours, v.get("params", {}), x)
    g_ref = jax.grad(loss, argnums)(ref, v.get("params", {}), x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g, g_ref)
  t = jax.random.normal(jax.random.key(3), x.shape)
  hvp = lambda m: jax.jvp(lambda x: jax.grad(loss, 2)(m, v.get("params", {}), x), (x,), (t,))[1]
  np.testing.assert_allclose(hvp(ours), hvp(ref), rtol=1e-4, atol=1e-4)


def test_batch_norm_keeps_bfloat16_and_reduces_in_float32():
  x = (jax.random.normal(jax.random.key(0), (8, 4, 4, 2)) * 3.0 + 100.0)
  bn = ops.batch_norm(False, train=True)
  v = bn.init(jax.random.key(1), x)
  y16, st16 = bn.apply(v, x.astype(jnp.bfloat16), mutable=["batch_stats"])
  y32, _ = bn.apply(v, x.astype(jnp.bfloat16).astype(jnp.float32), mutable=["batch_stats"])
  assert y16.dtype == jnp.bfloat16 and st16["batch_stats"]["var"].dtype == jnp.float32
  np.testing.assert_allclose(y16.astype(jnp.float32), y32.astype(jnp.bfloat16).astype(jnp.float32))
  g = jax.grad(lambda x: jnp.sum(bn.apply(v, x, mutable=["batch_stats"])[0] ** 3))(x.astype(jnp.bfloat16))
  assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))


def test_dot_channels_matches_numpy_in_value_both_gradients_and_forward_mode():
  """The 1x1 convolution over ``x`` flattened to ``[N, C]``: its value, its
  input and kernel gradients (``g k^T`` and ``x^T g``) against NumPy, a jvp
  (the second-order hypergradients take one), and ``Pointwise``'s stride."""
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x, k = jax.random.normal(kx, (3, 5, 4, 6)), jax.random.normal(kk, (6, 7))
  g = jax.random.normal(kg, (3, 5, 4, 7))
  xn, kn, gn = (np.asarray(a, np.float64) for a in (x, k, g))
  y, vjp = jax.vjp(ops.dot_channels, x, k)
  np.testing.assert_allclose(y, np.einsum("bhwi,io->bhwo", xn, kn), rtol=1e-5, atol=1e-5)
  dx, dk = vjp(g)
  np.testing.assert_allclose(dx, np.einsum("bhwo,io->bhwi", gn, kn), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dk, np.einsum("bhwi,bhwo->io", xn, gn), rtol=1e-4, atol=1e-4)
  tx, tk = jax.random.normal(kg, x.shape), jax.random.normal(kx, k.shape)
  _, ty = jax.jvp(ops.dot_channels, (x, k), (tx, tk))
  want = np.einsum("bhwi,io->bhwo", np.asarray(tx, np.float64), kn) + np.einsum(
      "bhwi,io->bhwo", xn, np.asarray(tk, np.float64))
  np.testing.assert_allclose(ty, want, rtol=1e-4, atol=1e-4)
  conv = ops.Pointwise(7, stride=2)
  v = conv.init(jax.random.key(1), x)
  np.testing.assert_allclose(conv.apply(v, x), np.einsum(
      "bhwi,io->bhwo", xn[:, ::2, ::2], np.asarray(v["params"]["kernel"][0, 0], np.float64)),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_dots_equals_xlas_convolution(stride):
  """``ops.conv_dots`` (one matrix product per kernel tap, the CPU's dense
  k x k convolution) against ``lax.conv_general_dilated``: values and the
  gradients w.r.t. input and kernel, on an odd size at stride 2."""
  from jax import lax  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  got = lambda x, w: ops.conv_dots(x, w, stride, 1)
  np.testing.assert_allclose(got(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  for a, b in zip(jax.grad(loss(got), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
