"""Depthwise convolution, forward + backward, per implementation and shape.

The shapes are those of the paper's CIFAR-10 search network (C = 16, 8 cells:
32x32 at 16 channels, 16x16 at 32, 8x8 at 64), kernels 3 and 5, dilation 1
(separable convs) and 2 (dilated convs), stride 1 and 2.  Each cell is the
median time of ``--repeats`` calls of one jitted program computing the
gradient w.r.t. input and kernel of ``sum(sin(y))``; the columns are ratios to
the grouped convolution (``lax.conv_general_dilated(feature_group_count=C)``)
measured in the same run.  ``ops.DEPTHWISE_AUTO`` records the choice per
backend that this table supports.

  python benchmarks/depthwise_conv.py --batch 8
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from xnas_jax import ops

IMPLS = ("grouped", "shifted", "dense")
SHAPES = [  # (hw, channels, kernel, dilation, stride)
    (32, 16, 3, 1, 1), (32, 16, 5, 1, 1), (32, 16, 3, 2, 1), (32, 16, 5, 2, 1),
    (32, 32, 3, 1, 2), (32, 32, 5, 2, 2),
    (16, 32, 3, 1, 1), (16, 32, 5, 2, 1), (16, 64, 5, 1, 2),
    (8, 64, 3, 1, 1), (8, 64, 5, 1, 1), (8, 64, 5, 2, 1),
]


def time_one(impl, x, w, stride, dilation, repeats):
  pad = dilation * (w.shape[0] - 1) // 2

  @jax.jit
  def grads(x, w):
    return jax.grad(lambda x, w: jnp.sum(jnp.sin(
        ops.depthwise_conv(x, w, stride, dilation, pad, impl))), argnums=(0, 1))(x, w)

  jax.block_until_ready(grads(x, w))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(grads(x, w))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--repeats", type=int, default=20)
  args = ap.parse_args()
  print(f"{jax.default_backend()} ({jax.devices()[0].device_kind}), batch {args.batch}, "
        f"forward + backward, median of {args.repeats}")
  print("| H=W | C | k | dilation | stride | grouped ms | shifted / grouped | dense / grouped |")
  print("|---|---|---|---|---|---|---|---|")
  key = jax.random.key(0)
  for hw, c, k, d, s in SHAPES:
    x = jax.random.normal(key, (args.batch, hw, hw, c))
    w = jax.random.normal(jax.random.fold_in(key, 1), (k, k, 1, c)) / k
    t = {impl: time_one(impl, x, w, s, d, args.repeats) for impl in IMPLS}
    print(f"| {hw} | {c} | {k} | {d} | {s} | {t['grouped'] * 1e3:.2f} "
          f"| {t['shifted'] / t['grouped']:.2f} | {t['dense'] / t['grouped']:.2f} |", flush=True)


if __name__ == "__main__":
  main()
