"""Depthwise convolution as shifted slices, with a hand-written backward pass
(``jax.custom_vjp``) for XLA:CPU.

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
  ``lax.reduce``: a single pass over ``x`` and ``g``, accumulated in float32 at least.

``benchmarks/search_step.py`` and ``benchmarks/op_profile.py`` measure the
effect; ``tests/test_ops.py`` checks values and gradients against XLA's grouped
convolution and a NumPy loop.  A ``custom_vjp`` has no forward-mode derivative:
the second-order hypergradients (a jvp of the weight gradient) keep XLA's
convolution (``search_setup.depthwise_impl``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
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
  # in one variadic reduction (one pass over x and g instead of k*k).
  acc = jnp.promote_types(g.dtype, jnp.float32)
  prods = tuple(tap.astype(acc) * g.astype(acc)
                for tap in _taps(_pad(x, padding), k, s, d, ho, wo))
  zeros = tuple(jnp.zeros((), acc) for _ in prods)
  sums = lax.reduce(prods, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1, 2))
  dw = jnp.stack(sums).reshape(kernel.shape).astype(kernel.dtype)
  return dx, dw


depthwise_conv.defvjp(_conv_fwd, _conv_bwd)
