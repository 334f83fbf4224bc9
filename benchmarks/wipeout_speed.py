"""Search-step time against the number of live experts per edge.

The wipeout mask is a dynamic input of the compiled program: each expert runs
under ``lax.cond``, so wiped experts are skipped without recompiling.  This
prints, side by side in one run, the time of the gradient program the search
runs twice per step, with k random live experts per edge (same k on every
edge of both cell types), as a ratio to the full supernet.

  python benchmarks/wipeout_speed.py                 # digits supernet
  python benchmarks/wipeout_speed.py --side 32 --channels 16 --cells 8 --batch 32
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from xnas_jax import arch as arch_lib
from xnas_jax.search_space import CELL_TYPES, get_search_space
from xnas_jax.supernet import Supernet


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--op_set", default="xnas")
  ap.add_argument("--side", type=int, default=8)
  ap.add_argument("--in_channels", type=int, default=1)
  ap.add_argument("--channels", type=int, default=8)
  ap.add_argument("--cells", type=int, default=5)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()

  space = get_search_space(args.op_set)
  net = Supernet(space, 10, channels=args.channels, num_cells=args.cells)
  x = jax.random.normal(jax.random.key(0), (args.batch, args.side, args.side, args.in_channels))
  y = jnp.zeros((args.batch,), jnp.int32)
  v = net.init(jax.random.key(1), x)
  e, n = space.num_edges, space.num_ops

  def grads(params, stats, arch, masks):
    u = arch_lib.mixture_weights(arch, masks)
    full = {t: jnp.broadcast_to(u[t], (max(net.replicas[t], 1), args.batch, e, n)) for t in CELL_TYPES}
    def f(params, w):
      logits, _ = net.apply({"params": params, "batch_stats": stats}, x, w, masks, rng=jax.random.key(0))
      return -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(args.batch), y])
    return jax.grad(f, argnums=(0, 1))(params, full)

  fn = jax.jit(grads)
  arch = arch_lib.init_arch_params(space)
  rng = np.random.default_rng(0)
  results = []
  for k in range(n, 0, -1) if n <= 8 else (n, n // 2, 1):
    masks = {}
    for t in CELL_TYPES:
      m = np.zeros((e, n), bool)
      for row in m:
        row[rng.choice(n, k, replace=False)] = True
      masks[t] = jnp.asarray(m)
    jax.block_until_ready(fn(v["params"], v["batch_stats"], arch, masks))  # warm
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(v["params"], v["batch_stats"], arch, masks))
      times.append(time.perf_counter() - t0)
    results.append((k, float(np.median(times))))
  base = results[0][1]
  print(f"{args.op_set} supernet, {args.cells} cells, C={args.channels}, {args.side}x{args.side}, "
        f"batch {args.batch}, {jax.devices()[0].platform}; compilations of the step: {fn._cache_size()}")
  print("| live experts per edge | step time / full supernet |")
  print("|---|---|")
  for k, t in results:
    print(f"| {k} of {n} | {t / base:.2f} |")


if __name__ == "__main__":
  main()
