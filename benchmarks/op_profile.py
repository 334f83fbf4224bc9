"""Where a search step's time goes: every expert's forward + backward, JAX
against PyTorch, at the shapes of the paper's search network.

One row per operation kind and resolution of the CIFAR-10 search network
(C = 16, 8 cells: 32x32 at 16 channels, 16x16 at 32, 8x8 at 64; the first
edges of a reduction cell run the strided version on the larger map).  Each
cell times one jitted program computing the gradients w.r.t. the input and the
op's parameters of ``sum(y * probe)`` (batch statistics in train mode), median
of ``--repeats``, against the same op of ``benchmarks/torch_search.py`` on the
same CPU threads.  "per step" multiplies by how often the op runs in one
search step of the XNAS op set (14 edges x cells of that resolution, forward +
backward for the weight step and again for the architecture step), so the
column adds up to an estimate of the experts' share of a step.

  python benchmarks/op_profile.py --batch 4
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from xnas_jax import ops

OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
       "dil_conv_3x3", "dil_conv_5x5")
# (resolution, channels, stride, edges of that shape in the 8-cell network):
# normal cells 0-1 at 32x32 (C=16), 3-4 at 16x16 (32), 6-7 at 8x8 (64); the
# reduction cells 2 and 5 run their 8 edges from the cell inputs strided on the
# larger map and their 6 node-to-node edges on the smaller one.
SHAPES = [(32, 16, 1, 2 * 14), (32, 32, 2, 8), (16, 32, 1, 2 * 14 + 6), (16, 64, 2, 8),
          (8, 64, 1, 2 * 14 + 6)]


def _median_time(fn, repeats):
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def time_jax(name, b, hw, c, stride, repeats):
  module = ops.make_op(name, c, stride)
  x = jax.random.normal(jax.random.key(0), (b, hw, hw, c))
  v = module.init({"params": jax.random.key(1)}, x, True)
  probe = jax.random.normal(jax.random.key(2), jax.eval_shape(
      lambda: module.apply(v, x, True, mutable=["batch_stats"])[0]).shape)

  @jax.jit
  def grads(params, x):
    def loss(params, x):
      y, _ = module.apply({"params": params, "batch_stats": v.get("batch_stats", {})}, x, True,
                          mutable=["batch_stats"])
      return jnp.sum(y * probe)
    return jax.grad(loss, argnums=(0, 1))(params, x)

  params = v.get("params", {})
  return _median_time(lambda: jax.block_until_ready(grads(params, x)), repeats)


def time_torch(name, b, hw, c, stride, repeats):
  import torch  # pylint: disable=import-outside-toplevel
  import torch_search  # pylint: disable=import-outside-toplevel
  op = torch_search.make_op(name, c, stride).train()
  x = torch.randn(b, c, hw, hw, requires_grad=True)
  probe = torch.randn_like(op(x))

  def step():
    op.zero_grad()
    x.grad = None
    (op(x) * probe).sum().backward()
  return _median_time(step, repeats)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--no-torch", action="store_true")
  args = ap.parse_args()
  print(f"{jax.default_backend()}, batch {args.batch}, forward + backward, median of "
        f"{args.repeats}; 'per step' = ms x 2 passes x edges of that shape in one search step")
  print("| op | H=W | C | stride | JAX ms | PyTorch ms | JAX / PyTorch | JAX per step ms "
        "| PyTorch per step ms |")
  print("|---|---|---|---|---|---|---|---|---|")
  totals = {"jax": 0.0, "torch": 0.0}
  for name in OPS:
    for hw, c, stride, edges in SHAPES:
      tj = time_jax(name, args.batch, hw, c, stride, args.repeats)
      tt = float("nan") if args.no_torch else time_torch(name, args.batch, hw, c, stride,
                                                           args.repeats)
      totals["jax"] += 2 * edges * tj
      totals["torch"] += 2 * edges * tt
      print(f"| {name} | {hw} | {c} | {stride} | {tj * 1e3:.2f} | {tt * 1e3:.2f} "
            f"| {tj / tt:.2f} | {2 * edges * tj * 1e3:.0f} | {2 * edges * tt * 1e3:.0f} |",
            flush=True)
  print(f"\nexperts' share of one search step: JAX {totals['jax']:.2f} s, "
        f"PyTorch {totals['torch']:.2f} s")


if __name__ == "__main__":
  main()
