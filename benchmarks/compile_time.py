"""Compile time and steady step time of the search's gradient program.

Prints a table: for each configuration, the time to trace (lower) and to
XLA-compile the jitted program the search runs twice per step (loss and
gradients w.r.t. weights and per-copy mixture weights), and one steady step.

  python benchmarks/compile_time.py            # digits and CIFAR shapes
  python benchmarks/compile_time.py --only digits

The cache is disabled so that every number is a cold compile.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from xnas_jax import search_steps
from xnas_jax import arch as arch_lib
from xnas_jax.search_space import get_search_space
from xnas_jax.supernet import Supernet

CONFIGS = {
    # name: (op_set, channels, cells, image side, in channels, batch)
    "digits (xnas, C=8, 5 cells, 8x8, b=32)": ("xnas", 8, 5, 8, 1, 32),
    "cifar (xnas, C=16, 8 cells, 32x32, b=96)": ("xnas", 16, 8, 32, 3, 96),
    "cifar (darts, C=16, 8 cells, 32x32, b=4)": ("darts", 16, 8, 32, 3, 4),
}


def measure(op_set, channels, cells, side, c_in, batch):
  space = get_search_space(op_set)
  net = Supernet(space, 10, channels=channels, num_cells=cells)
  x = jnp.ones((batch, side, side, c_in))
  y = jnp.zeros((batch,), jnp.int32)
  t = time.perf_counter()
  v = net.init(jax.random.key(0), x)
  jax.block_until_ready(v)
  t_init = time.perf_counter() - t
  masks = net.default_masks()
  u = arch_lib.mixture_weights(arch_lib.init_arch_params(space), masks)
  full = search_steps.per_copy_weights(net, u, batch)
  key = jax.random.key(0)
  fn = jax.jit(search_steps.loss_and_grads_fn(net))  # the search's own program
  t = time.perf_counter()
  lowered = fn.lower(v["params"], v["batch_stats"], full, masks, x, y, key)
  t_lower = time.perf_counter() - t
  t = time.perf_counter()
  compiled = lowered.compile()
  t_compile = time.perf_counter() - t
  out = compiled(v["params"], v["batch_stats"], full, masks, x, y, key)
  jax.block_until_ready(out)
  t = time.perf_counter()
  for _ in range(3):
    out = compiled(v["params"], v["batch_stats"], full, masks, x, y, key)
  jax.block_until_ready(out)
  t_step = (time.perf_counter() - t) / 3
  return t_init, t_lower, t_compile, t_step


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", default="", help="substring of the configurations to run")
  args = parser.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
  print(f"| configuration | init s | trace s | XLA compile s | trace+compile s | fwd+bwd step s |")
  print(f"|---|---|---|---|---|---|")
  for name, cfg in CONFIGS.items():
    if args.only and args.only not in name:
      continue
    ti, tl, tc, ts = measure(*cfg)
    print(f"| {name} | {ti:.1f} | {tl:.1f} | {tc:.1f} | {tl + tc:.1f} | {ts:.3f} |", flush=True)


if __name__ == "__main__":
  main()
