"""Depthwise convolution and 3x3 pooling as shifted slices, with
hand-written derivatives for XLA:CPU.

Max pooling is two 3-tap maxima with a ``jax.custom_jvp`` (``max_pool_3x3``,
whose docstring derives the gradient's placement); average pooling two 3-tap
sums (``avg_pool_3x3``, linear: JAX's own transpose of the slices is fused).
The depthwise convolution has a ``jax.custom_vjp``:

Forward, it is a sum of ``k*k`` strided slices of the padded input times one
kernel tap each, which XLA fuses into one loop.  Its automatic derivative is
not: the transpose of every slice is a pad of the cotangent and each tap's
kernel gradient a reduction of its own slice, so XLA:CPU materializes the
``k*k`` slices (in the search network's rematerialized backward pass) and runs
``k*k`` reductions and pads per convolution.  Written out, for
``y[i] = sum_p x_pad[s i + d p] w[p]`` (per channel, in 2-D):

* ``dx`` is the stride-1 shifted conv, with the flipped kernel, of ``g``
  dilated by ``s`` (``lax.pad``'s interior padding) and shifted so that
  ``dx[i] = sum_p' G[i + P + d p'] w[k-1-p']``;
* ``dw[p] = sum_i x_pad[s i + d p] g[i]`` for all ``k*k`` taps is one variadic
  ``lax.reduce`` over the image axes, then a sum over the batch: a single pass
  over ``x`` and ``g``, accumulated in float32 at least.

``benchmarks/search_step.py`` and ``benchmarks/step_profile.py`` measure the
effect; ``tests/test_ops.py`` checks values and gradients against XLA's grouped
convolution, ``nn.max_pool`` (with ties) and a NumPy loop.  The convolution's
``custom_vjp`` has no forward-mode derivative: the second-order hypergradients
(a jvp of the weight gradient) keep XLA's convolution
(``search_setup.depthwise_impl``).  The pooling's ``custom_jvp`` has one.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _out_size(n: int, k: int, stride: int, dilation: int, padding: int) -> int:
  return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _taps(xp: jax.Array, k: int, stride: int, dilation: int, ho: int, wo: int):
  """The ``k*k`` strided slices ``xp[:, s i + d p, s j + d q, :]``, row-major."""
  b, _, _, c = xp.shape
  for p in range(k):
    for q in range(k):
      start = (0, p * dilation, q * dilation, 0)
      limit = (b, start[1] + stride * (ho - 1) + 1, start[2] + stride * (wo - 1) + 1, c)
      yield lax.slice(xp, start, limit, (1, stride, stride, 1))


def _pad(x: jax.Array, padding: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))


def _shifted_sum(xp, w, stride, dilation, ho, wo):
  """``sum_{p,q} xp[:, s i + d p, s j + d q, :] * w[p, q]`` (``w``: ``[k, k, C]``)."""
  k = w.shape[0]
  out = None
  for t, tap in enumerate(_taps(xp, k, stride, dilation, ho, wo)):
    term = tap * w[t // k, t % k]
    out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int,
                   padding: int) -> jax.Array:
  """``y[b, i, j, c] = sum_{p, q} x_pad[b, s i + d p, s j + d q, c] w[p, q, c]``.

  ``x``: ``[B, H, W, C]``; ``kernel``: ``[k, k, 1, C]`` in ``x``'s dtype.
  """
  k = kernel.shape[0]
  ho = _out_size(x.shape[1], k, stride, dilation, padding)
  wo = _out_size(x.shape[2], k, stride, dilation, padding)
  return _shifted_sum(_pad(x, padding), kernel[:, :, 0], stride, dilation, ho, wo)


def _conv_fwd(x, kernel, stride, dilation, padding):
  return depthwise_conv(x, kernel, stride, dilation, padding), (x, kernel)


def _conv_bwd(stride, dilation, padding, res, g):
  x, kernel = res
  k, d, s = kernel.shape[0], dilation, stride
  _, h, w, _ = x.shape
  ho, wo = g.shape[1:3]
  # dx[i] = sum_p' G[i + P + d p'] w[k-1-p'], where G is g dilated by the
  # stride and shifted right by d (k-1): lax.pad's interior padding dilates,
  # its (possibly negative) edge padding shifts and crops.
  lo = d * (k - 1) - padding
  zero = jnp.zeros((), g.dtype)
  gz = lax.pad(g, zero, ((0, 0, 0), (lo, h + padding - s * (ho - 1) - 1, s - 1),
                         (lo, w + padding - s * (wo - 1) - 1, s - 1), (0, 0, 0)))
  dx = _shifted_sum(gz, kernel[::-1, ::-1, 0], 1, d, h, w)
  # dw[p, q] = sum_{b,i,j} x_pad[b, s i + d p, s j + d q] g[b, i, j]: all taps
  # in one variadic reduction (one pass over x and g instead of k*k) over the
  # image axes, then over the batch.  Keeping the batch axis in the variadic
  # reduction's output probably lets XLA:CPU split it over its threads (reduced
  # to [C] at once it was slower: benchmarks/depthwise_kernel_grad.py).
  acc = jnp.promote_types(g.dtype, jnp.float32)
  prods = tuple(tap.astype(acc) * g.astype(acc)
                for tap in _taps(_pad(x, padding), k, s, d, ho, wo))
  zeros = tuple(jnp.zeros((), acc) for _ in prods)
  sums = lax.reduce(prods, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (1, 2))
  dw = jnp.stack(sums).sum(axis=1).reshape(kernel.shape).astype(kernel.dtype)
  return dx, dw


depthwise_conv.defvjp(_conv_fwd, _conv_bwd)


def max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
  """``nn.max_pool(x, (3, 3), (s, s), padding=((1, 1), (1, 1)))``, NHWC, as
  a 3-tap max along the width, then along the height.

  Separable: the maximum of a window is the maximum of its rows' maxima, and
  the gradient goes to the first row (top to bottom) whose maximum attains it
  and, in that row, to the first column that does: the window's first
  maximum in row-major order, where XLA's ``select_and_scatter`` (``ge``) and
  PyTorch's ``max_pool2d`` put it.  Each 3-tap max has a hand-written jvp
  (``_max3``) whose transpose JAX derives: XLA:CPU computes the 2-D pooling's
  own gradient as an index-tracking ``reduce_window`` and a scatter, which
  cost several times the forward pass.
  """
  return _max3(_max3(x, 2, stride), 1, stride)


def _max3_taps(x, axis, stride, pad_value):
  """The three strided slices ``x_pad[s i + t]``, ``t = 0, 1, 2``, along ``axis``."""
  out = _out_size(x.shape[axis], 3, stride, 1, 1)
  pads = [(0, 0)] * x.ndim
  pads[axis] = (1, 1)
  xp = jnp.pad(x, pads, constant_values=pad_value)
  taps = []
  for t in range(3):
    start, limit, step = [0] * x.ndim, list(xp.shape), [1] * x.ndim
    start[axis], limit[axis], step[axis] = t, t + stride * (out - 1) + 1, stride
    taps.append(lax.slice(xp, start, limit, step))
  return taps


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _max3(x: jax.Array, axis: int, stride: int) -> jax.Array:
  """``y[i] = max(x[s i - 1], x[s i], x[s i + 1])`` along ``axis`` (-inf
  outside)."""
  return _max3_parts(x, axis, stride)[0]


def _max3_parts(x, axis, stride):
  """``_max3``'s output and the first two of its taps."""
  a, b, c = _max3_taps(x, axis, stride, -jnp.inf)
  return jnp.maximum(jnp.maximum(a, b), c), a, b


@_max3.defjvp
def _max3_jvp(axis, stride, primals, tangents):
  """The tangent of the first tap attaining the maximum.  Its transpose (the
  backward pass JAX derives) puts each output's gradient on that tap: three
  selects and three pads, fused by XLA."""
  (x,), (tx,) = primals, tangents
  y, a, b = _max3_parts(x, axis, stride)
  ta, tb, tc = _max3_taps(tx, axis, stride, 0.0)
  return y, jnp.where(a == y, ta, jnp.where(b == y, tb, tc))


def avg_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
  """``nn.avg_pool(x, (3, 3), (s, s), padding=((1, 1), (1, 1)),
  count_include_pad=False)``, NHWC, as a 3-tap sum along the width, then
  along the height (zero padding), divided by each window's count of
  in-image pixels (a constant of the shapes).

  Sums of slices: XLA fuses each pass, forward and backward (the transpose
  of a slice is a pad), where XLA:CPU runs ``reduce_window`` and its
  transpose as generic window loops.
  """
  h, w = x.shape[1:3]
  y = _sum3(_sum3(x, 2, stride), 1, stride)
  count = np.outer(_window_counts(h, stride), _window_counts(w, stride))
  return y / jnp.asarray(count[None, :, :, None], y.dtype)


def _sum3(x: jax.Array, axis: int, stride: int) -> jax.Array:
  """``y[i] = x[s i - 1] + x[s i] + x[s i + 1]`` along ``axis`` (0 outside)."""
  a, b, c = _max3_taps(x, axis, stride, 0.0)
  return a + b + c


def _window_counts(n: int, stride: int) -> np.ndarray:
  """How many of the taps ``s i - 1, s i, s i + 1`` fall in ``[0, n)``."""
  centers = stride * np.arange(_out_size(n, 3, stride, 1, 1))
  return (np.minimum(centers + 1, n - 1) - np.maximum(centers - 1, 0) + 1).astype(np.float32)
