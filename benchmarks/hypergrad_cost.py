"""Cost of one architecture step per hypergradient estimator, relative to first order.

Times, side by side in one run, the architecture step the search runs
(``search_steps.step_functions``): the per-copy gradient program on a validation
batch, plus for the second-order estimators the jitted ``correction`` of
``xnas_jax.hypergrad`` (one more gradient, and Hessian-vector products).
Peak memory is XLA's own account of the compiled programs (arguments +
outputs + temporaries, ``Compiled.memory_analysis()``), the larger of the two.

  python benchmarks/hypergrad_cost.py                       # digits supernet
  python benchmarks/hypergrad_cost.py --cifar --batch 8     # + CIFAR config, synthetic data
  python benchmarks/hypergrad_cost.py --only_cifar --batch 2 --methods first_order amended
  python benchmarks/hypergrad_cost.py --json /tmp/hypergrad_cost.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from xnas_jax import search_setup
from xnas_jax import search_steps
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("first_order", "darts_second_order", "darts_second_order_fd", "amended", "implicit")


def load_config(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def peak_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  if m is None:
    return 0
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def measure(config, method: str, repeats: int) -> tuple[float, int, float]:
  """(median arch-step seconds, peak bytes, compile seconds) of ``method``."""
  config = config.copy_and_resolve_references()
  config.arch_gradient = "darts_second_order" if method.startswith("darts") else method
  config.hypergrad.exact = not method.endswith("_fd")
  search = search_setup.build_search(config)
  fns = search_steps.step_functions(search)
  state = search_setup.init_state(search, jax.random.key(0))
  b = config.batch_size
  d = search.data
  x = jnp.asarray(input_norm(d.train.images[:b], d))
  y = jnp.asarray(d.train.labels[:b])
  xv = jnp.asarray(input_norm(d.val.images[:b], d))
  yv = jnp.asarray(d.val.labels[:b])
  masks = search_setup.live_masks(search, state)
  key = jax.random.key(1)
  u_full = fns.full_weights(state["arch"], masks, key, b)
  grads_args = (state["params"], state["batch_stats"], u_full, masks, xv, yv, key)
  t0 = time.perf_counter()
  programs = [fns.grads.lower(*grads_args).compile()]
  calls = [(programs[0], grads_args)]
  if "correction" in fns:
    _, _, gv_params, gv_u, _ = programs[0](*grads_args)
    corr_args = (state["params"], state["batch_stats"], state["arch"], masks, (x, y), (xv, yv),
                 gv_params, gv_u, key, state["step"])
    programs.append(fns.correction.lower(*corr_args).compile())
    calls.append((programs[1], corr_args))
  compile_s = time.perf_counter() - t0

  def step():
    return [fn(*args) for fn, args in calls]
  jax.block_until_ready(step())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(step())
    times.append(time.perf_counter() - t)
  return float(np.median(times)), max(peak_bytes(p) for p in programs), compile_s


def input_norm(images, data):
  return (images - data.mean) / data.std


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--cifar", action="store_true", help="also the CIFAR-10 DARTS config, synthetic data")
  ap.add_argument("--batch", type=int, default=0, help="override the batch size (CIFAR rows)")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--json", default="")
  ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
  ap.add_argument("--only_cifar", action="store_true", help="skip the digits rows")
  args = ap.parse_args()
  setups = {} if args.only_cifar else {"digits (xnas, C=8, 5 cells, b=32)": load_config("digits")}
  if args.cifar or args.only_cifar:
    c = load_config("cifar10_darts")
    c.dataset = "synthetic_cifar10"
    if args.batch:
      c.batch_size = args.batch
    setups[f"cifar10_darts (C=16, 8 cells, synthetic, b={c.batch_size})"] = c
  rows = []
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}")
  print("| setup | arch gradient | step time / first order | peak memory / first order "
        "| step ms | peak MiB | compile s |")
  print("|---|---|---|---|---|---|---|")
  for name, config in setups.items():
    base = None
    for method in ["first_order"] + [m for m in args.methods if m != "first_order"]:  # the base
      t, mem, comp = measure(config, method, args.repeats)
      base = base or (t, mem)
      rows.append({"setup": name, "method": method, "step_s": t, "peak_bytes": mem,
                   "compile_s": comp, "time_ratio": t / base[0], "memory_ratio": mem / base[1]})
      print(f"| {name} | {method} | {t / base[0]:.2f} | {mem / base[1]:.2f} | {t * 1e3:.0f} "
            f"| {mem / 2**20:.1f} | {comp:.1f} |", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
