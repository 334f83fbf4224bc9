"""The depthwise convolution's kernel gradient, by way of reducing (XLA:CPU).

``dw[t, c] = sum_{b,i,j} tap_t[b, i, j, c] g[b, i, j, c]`` for the ``k*k``
taps of ``shifted_ops``'s backward, at the search network's shapes (batch 16,
C = 16) and the evaluation network's (batch 32, C = 36 to 144), five ways:

* one variadic ``lax.reduce`` over ``(b, i, j)`` (the form before);
* the taps' products stacked, then one ``jnp.sum``;
* ``einsum("tnc,nc->tc")`` over the stacked taps;
* one variadic reduction over ``(i, j)``, then a sum over ``b`` (``shifted_ops``
  now): its ``[B, C]`` outputs let XLA:CPU split the work over its threads;
* over ``(b, i)``, then over ``j``.

Prints ms per call (mean of 20 after a warm-up) and each form's largest
difference from the first, relative to its largest entry.

  python benchmarks/depthwise_kernel_grad.py
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax import lax

from xnas_jax import shifted_ops as so


def _taps(x, g, k, d, p):
  ho, wo = g.shape[1:3]
  return list(so._taps(so._pad(x, p), k, 1, d, ho, wo))  # pylint: disable=protected-access


def _variadic(prods, axes):
  zeros = tuple(jnp.zeros((), jnp.float32) for _ in prods)
  return jnp.stack(lax.reduce(prods, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)),
                              axes))


FORMS = {
    "variadic (b,i,j)": lambda x, g, k, d, p: _variadic(
        tuple(t * g for t in _taps(x, g, k, d, p)), (0, 1, 2)),
    "stack + sum": lambda x, g, k, d, p: jnp.sum(
        jnp.stack([t * g for t in _taps(x, g, k, d, p)]), axis=(1, 2, 3)),
    "einsum": lambda x, g, k, d, p: jnp.einsum(
        "tnc,nc->tc", jnp.stack(_taps(x, g, k, d, p)).reshape(k * k, -1, g.shape[-1]),
        g.reshape(-1, g.shape[-1])),
    "variadic (i,j), then b": lambda x, g, k, d, p: _variadic(
        tuple(t * g for t in _taps(x, g, k, d, p)), (1, 2)).sum(axis=1),
    "variadic (b,i), then j": lambda x, g, k, d, p: _variadic(
        tuple(t * g for t in _taps(x, g, k, d, p)), (0, 1)).sum(axis=1),
}
SHAPES = [  # (x shape, kernel, dilation)
    ((16, 32, 32, 16), 3, 1), ((16, 32, 32, 16), 5, 1), ((16, 32, 32, 16), 5, 2),
    ((32, 32, 32, 36), 3, 1), ((32, 16, 16, 72), 3, 1), ((32, 8, 8, 144), 3, 1),
]


def main():
  print(f"{jax.devices()[0].platform}: ms per call (relative difference from the first form)")
  print("| x, kernel, dilation | " + " | ".join(FORMS) + " |")
  print("|---|" + "---|" * len(FORMS))
  for shape, k, d in SHAPES:
    p = d * (k - 1) // 2
    x = jax.random.normal(jax.random.key(0), shape)
    g = jax.random.normal(jax.random.key(1), shape)
    cells, ref = [], None
    for f in FORMS.values():
      fj = jax.jit(lambda x, g, f=f: f(x, g, k, d, p))
      out = fj(x, g).block_until_ready()
      ref = out if ref is None else ref
      err = float(jnp.abs(out - ref).max() / jnp.abs(ref).max())
      t = time.perf_counter()
      for _ in range(20):
        out = fj(x, g)
      out.block_until_ready()
      cells.append(f"{(time.perf_counter() - t) / 20 * 1e3:.2f} ({err:.0e})")
    print(f"| {shape}, {k}, {d} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  main()
