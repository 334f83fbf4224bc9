"""The statistical study of XNAS sec. 8.3 in JAX against a plain NumPy loop.

Times the full study (``--runs`` runs x ``--steps`` steps for each N in the
grid and both methods) as one jitted ``vmap``-over-runs, ``scan``-over-steps
program per (N, method), and the same algorithm as a NumPy loop
(``toys.numpy_statistical_selection``).  The NumPy loop is timed on
``--numpy_runs`` runs and scaled per run (it is linear in the runs).

  python benchmarks/toy_throughput.py
  python benchmarks/toy_throughput.py --numpy_runs 1000      # the whole study in NumPy too
"""
from __future__ import annotations

import argparse
import time

import jax

from xnas_jax import optim, toys


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--runs", type=int, default=1000)
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--numpy_runs", type=int, default=20)
  ap.add_argument("--experts", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
  args = ap.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.runs} runs x {args.steps} steps")
  print("| N | method | JAX s (incl. compile) | JAX s (steady) | NumPy s (scaled to all runs) "
        "| NumPy / JAX steady |")
  print("|---|---|---|---|---|---|")
  totals = [0.0, 0.0, 0.0]
  for n in args.experts:
    for method in toys.METHODS:
      kw = dict(num_experts=n, num_steps=args.steps, num_runs=args.runs, method=method)
      t = time.perf_counter()
      jax.block_until_ready(toys.statistical_selection(jax.random.key(0), **kw))
      first = time.perf_counter() - t
      t = time.perf_counter()
      jax.block_until_ready(toys.statistical_selection(jax.random.key(1), **kw))
      steady = time.perf_counter() - t
      lr = optim.regret_optimal_learning_rate(n, args.steps, 4.0)
      t = time.perf_counter()
      toys.numpy_statistical_selection(0, num_experts=n, num_steps=args.steps,
                                       num_runs=args.numpy_runs, reward_std=1.0, learning_rate=lr,
                                       grad_bound=4.0, method=method)
      numpy_s = (time.perf_counter() - t) * args.runs / args.numpy_runs
      totals = [totals[0] + first, totals[1] + steady, totals[2] + numpy_s]
      print(f"| {n} | {method} | {first:.2f} | {steady:.2f} | {numpy_s:.1f} | {numpy_s / steady:.0f} |",
            flush=True)
  print(f"| all | both | {totals[0]:.1f} | {totals[1]:.1f} | {totals[2]:.0f} | {totals[2] / totals[1]:.0f} |")


if __name__ == "__main__":
  main()
