"""Dense 3x3 convolutions inside a ``lax.scan`` over edges, forward + backward.

NAS-Bench-201's supernet runs each cell's 6 edges as one ``lax.scan`` and its
``nor_conv_3x3`` is a dense C -> C convolution.  This times the gradient (input
and kernels) of 6 chained edges ``x <- x + tanh(conv(relu(x)))`` at the
space's three stage shapes (C = 16, 32, 64 at 32x32, 16x16, 8x8), computed by
``lax.conv_general_dilated`` ("xla") and by ``ops.conv_dots`` ("dots": one
matrix product per kernel tap), and prints the ratio.  ``ops.DENSE_CONV_AUTO``
records the choice per backend that this table supports.

  python benchmarks/dense_conv.py --batch 16
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from jax import lax

from xnas_jax import ops


def xla_conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def dots_conv(x, w):
  return ops.conv_dots(x, w, 1, 1)


def time_scan(conv, batch: int, size: int, channels: int, repeats: int) -> float:
  def loss(ws, x):
    body = lambda c, w: (c + jnp.tanh(conv(jax.nn.relu(c), w)), None)
    return jnp.sum(lax.scan(body, x, ws)[0] ** 2)
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  ws = 0.1 * jax.random.normal(jax.random.key(0), (6, 3, 3, channels, channels))
  x = jax.random.normal(jax.random.key(1), (batch, size, size, channels))
  jax.block_until_ready(grad(ws, x))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(grad(ws, x))
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()
  print(f"{jax.devices()[0].platform}, batch {args.batch}, 6 edges in a scan, "
        f"median of {args.repeats}")
  print("| shape | xla ms | dots ms | dots / xla |")
  print("|---|---|---|---|")
  for size, c in ((32, 16), (16, 32), (8, 64)):
    t_xla = time_scan(xla_conv, args.batch, size, c, args.repeats)
    t_dots = time_scan(dots_conv, args.batch, size, c, args.repeats)
    print(f"| {size}x{size}, C={c} | {t_xla * 1e3:.1f} | {t_dots * 1e3:.1f} "
          f"| {t_dots / t_xla:.2f} |", flush=True)


if __name__ == "__main__":
  main()
