"""The candidate operations (experts) of the DARTS cell, as Flax modules.

All tensors are NHWC.  Convolutions are ReLU-Conv-BN as in DARTS
(``quark0/darts/cnn/operations.py``); separable convolutions are applied twice;
BatchNorm is non-affine in the search network (``affine=False``) and affine in
the evaluation network.  PyTorch's BatchNorm momentum 0.1 is Flax's 0.9.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from xnas_jax import shifted_ops

_BN_MOMENTUM = 0.9
_BN_EPS = 1e-5


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def normalize_batch(x: jax.Array, axes: tuple[int, ...], epsilon: float):
  """Training-mode batch normalization without scale and bias.

  Returns ``(x_hat, mean, var)`` with ``mean = E[x]``, ``var = max(0, E[x^2] -
  E[x]^2)`` over ``axes`` (Flax's fast variance) and ``x_hat = (x - mean) *
  r``, ``r = (var + eps)^(-1/2)``: the same operations as ``nn.BatchNorm``.

  Its derivative is written out (Ioffe & Szegedy 2015, sec. 3; here as a
  jvp).  With ``d var = 2 E[(x - mean) dx] = (2 / r) E[x_hat dx]`` and
  ``d r = -r^2 E[x_hat dx]``::

      d x_hat = r (dx - E[dx] - x_hat E[x_hat dx])

  a linear map that is its own transpose, so the backward pass is the same two
  per-channel means (of ``g`` and ``x_hat g``) and one elementwise pass,
  with ``x_hat`` and ``r`` as residuals.  Automatic differentiation of the
  forward instead differentiates through ``E[x^2] - E[x]^2`` and ``rsqrt``:
  more reductions and more residuals (``benchmarks/cell_step.py``).  Being
  a ``custom_jvp``, it has forward-mode and higher derivatives (the
  second-order hypergradients differentiate it twice).
  """
  mean, var = batch_stats(x, axes)
  x_hat = (x - jnp.expand_dims(mean, axes)) * lax.rsqrt(jnp.expand_dims(var, axes) + epsilon)
  return x_hat, mean, var


def batch_stats(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """``E[x]`` and ``max(0, E[x^2] - E[x]^2)`` over ``axes`` (Flax's fast variance)."""
  mean = x.mean(axes)
  return mean, jnp.maximum(0.0, (x * x).mean(axes) - mean * mean)


@normalize_batch.defjvp
def _normalize_batch_jvp(axes, epsilon, primals, tangents):
  (x,), (dx,) = primals, tangents
  x_hat, mean, var = normalize_batch(x, axes, epsilon)
  r = lax.rsqrt(var + epsilon)
  d_mean = dx.mean(axes)
  c = (x_hat * dx).mean(axes)
  expand = lambda a: jnp.expand_dims(a, axes)
  d_x_hat = expand(r) * (dx - expand(d_mean) - x_hat * expand(c))
  return (x_hat, mean, var), (d_x_hat, d_mean, 2.0 * c / r)


class BatchNorm(nn.Module):
  """Batch normalization over every axis but the last, as ``nn.BatchNorm``
  (same variables: ``batch_stats/{mean,var}``, ``params/{scale,bias}``; same
  running-average update, statistics in float32 at least).  Without scale
  and bias (the search network's) it trains through ``normalize_batch``'s
  written-out derivative, which makes a search cell's gradient programs
  faster; with them (the evaluation network's) through Flax's formula and
  automatic derivative, since ``normalize_batch`` followed by the affine map
  was not faster there (``benchmarks/cell_step.py``,
  ``benchmarks/evalnet_step.py``).  The output keeps the input's dtype, so
  that a bfloat16 network stays bfloat16 after every BN."""
  use_running_average: bool = False
  momentum: float = _BN_MOMENTUM
  epsilon: float = _BN_EPS
  use_scale: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    axes = tuple(range(x.ndim - 1))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    train, affine = not self.use_running_average, self.use_scale or self.use_bias
    if train and not affine:
      y, mean, var = normalize_batch(xf, axes, self.epsilon)
    else:  # Flax's _normalize
      mean, var = batch_stats(xf, axes) if train else (ra_mean.value, ra_var.value)
      mul = lax.rsqrt(var + self.epsilon)
      if self.use_scale:
        mul = mul * self.param("scale", nn.initializers.ones, features, jnp.float32)
      y = (xf - mean) * mul
      if self.use_bias:
        y = y + self.param("bias", nn.initializers.zeros, features, jnp.float32)
    if train and not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * lax.stop_gradient(mean)
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * lax.stop_gradient(var)
    return y.astype(x.dtype)


def batch_norm(affine: bool, train: bool, name: str | None = None) -> BatchNorm:
  return BatchNorm(use_running_average=not train, use_scale=affine, use_bias=affine, name=name)


def dot_channels(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``y[..., o] = sum_i x[..., i] kernel[i, o]``: a 1x1 convolution as a
  matrix product over ``x`` flattened to ``[N, C_in]``.

  The flattening is for the kernel gradient ``x^T g``: contracted over one
  axis, XLA:CPU runs it as one dot reading both ``[N, C]`` operands as they
  are; contracted over the three axes ``(b, h, w)`` it canonicalizes the dot
  by transposing ``x`` to ``[C_in, N]``, and fuses that transpose with the
  producer of ``x`` (the depthwise convolution, batch norm and ReLU before
  it), recomputed with strided writes (``benchmarks/step_profile.py
  --evalnet`` shows them).
  """
  y = lax.dot_general(x.reshape(-1, x.shape[-1]), kernel, (((1,), (0,)), ((), ())))
  return y.reshape(x.shape[:-1] + (kernel.shape[-1],))


class Pointwise(nn.Module):
  """A 1x1 convolution (``stride`` subsamples first), computed as a matrix
  product over the channels (``dot_channels``).

  Its kernel is ``[1, 1, C_in, C_out]`` under the name ``kernel`` (and its
  bias, where ``use_bias``, ``[C_out]`` under ``bias``), as
  ``nn.Conv(features, (1, 1))`` has them.  XLA:CPU runs a dot several times
  faster than a 1x1 convolution inside the supernet's ``lax.scan`` over edges
  (``benchmarks/op_profile.py``); on a GPU both are one GEMM.
  """
  features: int
  stride: int = 1
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    y = dot_channels(x, kernel[0, 0].astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                         jnp.float32).astype(y.dtype)
    return y


# How a dense k x k convolution (C_in -> C_out, NAS-Bench-201's nor_conv_3x3
# and residual blocks) is computed, per backend: "dots" (k*k shifted slices
# of the padded input, each a matrix product with one kernel tap over
# ``[N, C]``, summed; ``conv_dots``) or "xla" (``lax.conv_general_dilated``).
# Inside the supernet's ``lax.scan`` over edges XLA:CPU runs its convolution
# several times slower than the dots (benchmarks/dense_conv.py).
DENSE_CONV_AUTO = {"cpu": "dots"}


def conv_dots(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0) -> jax.Array:
  """``y[b, i, j, o] = sum_{p, q, c} x_pad[b, s i + p, s j + q, c] w[p, q, c, o]``
  as one matrix product per kernel tap (``dot_channels``), summed."""
  kh, kw, _, c_out = kernel.shape
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  ho = (xp.shape[1] - kh) // stride + 1
  wo = (xp.shape[2] - kw) // stride + 1
  y = None
  for p in range(kh):
    for q in range(kw):
      tap = xp[:, p:p + stride * (ho - 1) + 1:stride, q:q + stride * (wo - 1) + 1:stride, :]
      term = dot_channels(tap, kernel[p, q])
      y = term if y is None else y + term
  return y.reshape(x.shape[0], ho, wo, c_out)


class DenseConv(nn.Module):
  """A k x k convolution with ``nn.Conv``'s variables (``kernel``, ``bias``),
  computed as ``DENSE_CONV_AUTO`` chooses for the backend."""
  features: int
  kernel_size: int
  stride: int = 1
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, (self.kernel_size - 1) // 2
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features), jnp.float32).astype(x.dtype)
    if DENSE_CONV_AUTO.get(jax.default_backend()) == "dots":
      y = conv_dots(x, kernel, self.stride, p)
    else:
      y = lax.conv_general_dilated(x, kernel, (self.stride,) * 2, ((p, p), (p, p)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                         jnp.float32).astype(y.dtype)
    return y


class ReLUConvBN(nn.Module):
  """ReLU -> Conv(k x k, stride) -> BN.

  ``use_bias``: the convolution's bias, which NAS-Bench-201's release gives a
  convolution before a non-affine BN (``bias=not affine``); DARTS's have none.
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  affine: bool = False
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = nn.relu(x)
    if self.kernel_size == 1:
      x = Pointwise(self.features, self.stride, self.use_bias, name="Conv_0")(x)
    else:
      x = DenseConv(self.features, self.kernel_size, self.stride, self.use_bias,
                    name="Conv_0")(x)
    return batch_norm(self.affine, train)(x)


# How a depthwise convolution is computed (``depthwise_conv``):
#   "shifted": k*k strided slices of the padded input, each times one kernel
#     tap, summed (elementwise work XLA fuses; fast on XLA:CPU);
#   "grouped": lax.conv_general_dilated with feature_group_count = C;
#   "dense":   a plain conv with the block-diagonal kernel eye(C) * w;
#   "auto":    the measured choice for the backend (``DEPTHWISE_AUTO``).
DEPTHWISE_IMPLS = ("auto", "shifted", "grouped", "dense")
# On XLA:CPU the grouped convolution is the slowest of the three at the
# supernet's shapes (benchmarks/depthwise_conv.py), and inside the supernet's
# lax.scan over edges its convolutions slow down several-fold, where the
# shifted form's elementwise work does not: the shifted form is the CPU's
# choice for every kernel size.  GPU and TPU keep the grouped conv until
# measured there.
DEPTHWISE_AUTO = {"cpu": {3: "shifted", 5: "shifted"}}


def resolve_depthwise_impl(impl: str, kernel_size: int, backend: str | None = None) -> str:
  """The implementation ``impl`` names ("auto": the backend's measured choice
  for this kernel size, ``DEPTHWISE_AUTO``; the grouped conv where none is
  recorded)."""
  if impl not in DEPTHWISE_IMPLS:
    raise ValueError(f"unknown depthwise_impl {impl!r}; expected one of {list(DEPTHWISE_IMPLS)}")
  if impl != "auto":
    return impl
  return DEPTHWISE_AUTO.get(backend or jax.default_backend(), {}).get(kernel_size, "grouped")


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1, dilation: int = 1,
                   padding: int = 0, impl: str = "auto") -> jax.Array:
  """``y[b, i, j, c] = sum_{p, q} x_pad[b, s i + d p, s j + d q, c] w[p, q, c]``.

  A depthwise (one filter per channel) convolution, NHWC, symmetric zero
  padding; the three implementations compute the same function (tested to
  float tolerance, values and gradients).

  Args:
    x: ``[B, H, W, C]``.
    kernel: ``[k, k, 1, C]`` (Flax's grouped-conv kernel layout).
    stride, dilation, padding: ``s``, ``d`` and the pad on each side.
    impl: one of ``DEPTHWISE_IMPLS``.
  """
  kh, kw, _, c = kernel.shape
  impl = resolve_depthwise_impl(impl, kh)
  kernel = kernel.astype(x.dtype)
  if impl == "grouped" or impl == "dense":
    if impl == "dense":
      kernel = kernel * jnp.eye(c, dtype=x.dtype)  # [k, k, C, C], block diagonal
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
        rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c if impl == "grouped" else 1)
  return shifted_ops.depthwise_conv(x, kernel, stride, dilation, padding)


class DepthwiseConv(nn.Module):
  """A depthwise k x k convolution without bias; its kernel is ``[k, k, 1, C]``
  under the name ``kernel``, as ``nn.Conv(C, feature_group_count=C)`` has it."""
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, 1, c), jnp.float32)
    p = self.dilation * (self.kernel_size - 1) // 2
    return depthwise_conv(x, kernel, self.stride, self.dilation, p, self.impl)


class DilConv(nn.Module):
  """ReLU -> depthwise Conv(k, stride, dilation) -> Conv 1x1 -> BN."""
  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 2
  affine: bool = False
  depthwise_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = nn.relu(x)
    # Named as nn.Conv would be, so that the variables keep their paths.
    x = DepthwiseConv(self.kernel_size, self.stride, self.dilation, self.depthwise_impl,
                      name="Conv_0")(x)
    x = Pointwise(self.features, name="Conv_1")(x)
    return batch_norm(self.affine, train)(x)


class SepConv(nn.Module):
  """A dilation-1 ``DilConv`` applied twice (the first one strided)."""
  features: int
  kernel_size: int
  stride: int = 1
  affine: bool = False
  depthwise_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    c_in = x.shape[-1]
    x = DilConv(c_in, self.kernel_size, self.stride, 1, self.affine, self.depthwise_impl)(x, train)
    return DilConv(self.features, self.kernel_size, 1, 1, self.affine,
                   self.depthwise_impl)(x, train)


class FactorizedReduce(nn.Module):
  """ReLU -> two offset 1x1 convs with stride 2, concatenated -> BN."""
  features: int
  affine: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    if self.features % 2:
      raise ValueError(f"FactorizedReduce needs an even channel count, got {self.features}")
    x = nn.relu(x)
    half = self.features // 2
    a = Pointwise(half, 2, name="Conv_0")(x)
    b = Pointwise(half, 2, name="Conv_1")(x[:, 1:, 1:, :])
    # For odd sizes the offset branch is one pixel short; pad it at the end.
    dh, dw = a.shape[1] - b.shape[1], a.shape[2] - b.shape[2]
    b = jnp.pad(b, ((0, 0), (0, dh), (0, dw), (0, 0)))
    return batch_norm(self.affine, train)(jnp.concatenate([a, b], axis=-1))


# 3x3 max pooling per backend: "separable" (``shifted_ops.max_pool_3x3``, two
# 3-tap maxima with a hand-written jvp; XLA:CPU's own gradient of
# reduce_window is an index-tracking reduce_window plus a scatter) or XLA's
# reduce_window where none is recorded.
MAX_POOL_AUTO = {"cpu": "separable"}
# 3x3 average pooling likewise: "separable" (``shifted_ops.avg_pool_3x3``, two
# 3-tap sums) or XLA's reduce_window.
AVG_POOL_AUTO = {"cpu": "separable"}


class Pool(nn.Module):
  """3x3 max or average pooling (padding 1, avg excludes padding) -> BN.

  DARTS's search network follows every pooling with a non-affine BN
  (``model_search.MixedOp``); the evaluation network does not.
  """
  kind: str
  stride: int = 1
  with_bn: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    pad = ((1, 1), (1, 1))
    dtype = x.dtype
    if self.kind == "max":
      x = (shifted_ops.max_pool_3x3(x, self.stride)
           if MAX_POOL_AUTO.get(jax.default_backend()) == "separable"
           else nn.max_pool(x, (3, 3), (self.stride,) * 2, padding=pad))
    else:
      # (The divisor counts are float32; keep the input's dtype.)
      x = (shifted_ops.avg_pool_3x3(x, self.stride)
           if AVG_POOL_AUTO.get(jax.default_backend()) == "separable"
           else nn.avg_pool(x, (3, 3), (self.stride,) * 2, padding=pad,
                            count_include_pad=False)).astype(dtype)
    return batch_norm(False, train)(x) if self.with_bn else x


class Identity(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    return x


class Zero(nn.Module):
  """The ``none`` operation: zeros of the output shape."""
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    return jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])


class Noise(nn.Module):
  """The ``noise`` operation of space S4: N(0, 1) regardless of the input.

  Draws from the ``"noise"`` RNG stream.
  """
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    shape = x[:, ::self.stride, ::self.stride, :].shape
    return jax.random.normal(self.make_rng("noise"), shape, x.dtype)


def make_op(name: str, channels: int, stride: int, affine: bool = False,
            pool_bn: bool = True, depthwise_impl: str = "auto") -> nn.Module:
  """Returns the Flax module of operation ``name`` mapping C -> C channels."""
  dw = depthwise_impl
  factories: dict[str, Callable[[], nn.Module]] = {
      "none": lambda: Zero(stride),
      "noise": lambda: Noise(stride),
      "max_pool_3x3": lambda: Pool("max", stride, pool_bn),
      "avg_pool_3x3": lambda: Pool("avg", stride, pool_bn),
      "skip_connect": lambda: (Identity() if stride == 1
                               else FactorizedReduce(channels, affine)),
      "sep_conv_3x3": lambda: SepConv(channels, 3, stride, affine, dw),
      "sep_conv_5x5": lambda: SepConv(channels, 5, stride, affine, dw),
      "dil_conv_3x3": lambda: DilConv(channels, 3, stride, 2, affine, dw),
      "dil_conv_5x5": lambda: DilConv(channels, 5, stride, 2, affine, dw),
      # NAS-Bench-201's convolutions (xautodl cell_operations.ReLUConvBN).
      "nor_conv_1x1": lambda: ReLUConvBN(channels, 1, stride, affine, use_bias=not affine),
      "nor_conv_3x3": lambda: ReLUConvBN(channels, 3, stride, affine, use_bias=not affine),
  }
  if name not in factories:
    raise ValueError(f"unknown operation {name!r}; expected one of {sorted(factories)}")
  return factories[name]()


def is_parameter_free(name: str) -> bool:
  """Whether an op has no trainable weights (pools, skip, none, noise)."""
  return name in ("none", "noise", "max_pool_3x3", "avg_pool_3x3", "skip_connect")
