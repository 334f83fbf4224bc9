"""Search-step time against the number of live experts per edge, masked and rebuilt.

The wipeout mask is a dynamic input of the compiled program: each expert runs
under ``lax.cond``, so wiped experts are skipped without recompiling.  Once an
op is wiped on every edge of a cell type, the search rebuilds the supernet
without it at the next epoch boundary (``config.rebuild_wiped``), paying one
compilation.  This times the search's own gradient program
(``search_steps.loss_and_grads_fn``, run twice per search step), side by side in one
run, as a ratio to the full supernet:

* masked, random: k random live experts on each edge (one compilation serves
  every row);
* masked, same k: the same k ops live on every edge (what a rebuild needs);
* rebuilt: the supernet built with only those k ops, its compile time, and the
  number of search steps after which the rebuild has paid for its compilation
  (``compile / (2 x (masked - rebuilt))``).

  python benchmarks/wipeout_speed.py                 # digits supernet
  python benchmarks/wipeout_speed.py --side 32 --in_channels 3 --channels 16 --cells 8 --batch 32
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from xnas_jax import search_steps
from xnas_jax import arch as arch_lib
from xnas_jax.rebuild import carry_over
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's
from xnas_jax.supernet import Supernet


def step_time(fn, args, repeats):
  jax.block_until_ready(fn(*args))  # warm
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--op_set", default="xnas")
  ap.add_argument("--side", type=int, default=8)
  ap.add_argument("--in_channels", type=int, default=1)
  ap.add_argument("--channels", type=int, default=8)
  ap.add_argument("--cells", type=int, default=5)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--no_rebuild", action="store_true", help="masked rows only (one compilation)")
  args = ap.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)

  space = get_search_space(args.op_set)
  net = Supernet(space, 10, channels=args.channels, num_cells=args.cells)
  x = jax.random.normal(jax.random.key(0), (args.batch, args.side, args.side, args.in_channels))
  y = jnp.zeros((args.batch,), jnp.int32)
  v = net.init(jax.random.key(1), x)
  e, n = space.num_edges, space.num_ops
  arch = arch_lib.init_arch_params(space)
  rng = np.random.default_rng(0)
  key = jax.random.key(2)

  def inputs(the_net, variables, masks):
    u = search_steps.per_copy_weights(the_net, arch_lib.mixture_weights(arch, masks), args.batch)
    return (variables["params"], variables["batch_stats"], u, masks, x, y, key)

  masked_fn = jax.jit(search_steps.loss_and_grads_fn(net))
  rows = []
  order = [o for o in space.ops if o != "none"]
  for k in range(len(order), 0, -1):
    random_masks, same_masks = {}, {}
    keep = order[:k]
    for t in CELL_TYPES:
      m = np.zeros((e, n), bool)
      for row in m:
        row[rng.choice(n, k, replace=False)] = True
      random_masks[t] = jnp.asarray(m)
      same = np.zeros((e, n), bool)
      same[:, [space.ops.index(o) for o in keep]] = True
      same_masks[t] = jnp.asarray(same)
    row = {"k": k,
           "random": step_time(masked_fn, inputs(net, v, random_masks), args.repeats),
           "same": step_time(masked_fn, inputs(net, v, same_masks), args.repeats)}
    if not args.no_rebuild:
      small = dataclasses.replace(net, active_ops=(tuple(keep), tuple(keep)))
      sv = carry_over(v, jax.eval_shape(small.init, jax.random.key(1), x))
      fn = jax.jit(search_steps.loss_and_grads_fn(small))
      t0 = time.perf_counter()
      compiled = fn.lower(*inputs(small, sv, same_masks)).compile()
      row["compile"] = time.perf_counter() - t0
      row["rebuilt"] = step_time(compiled, inputs(small, sv, same_masks), args.repeats)
    rows.append(row)

  base = rows[0]["random"]
  print(f"{args.op_set} supernet, {args.cells} cells, C={args.channels}, {args.side}x{args.side}, "
        f"batch {args.batch}, {jax.devices()[0].platform}; full step {base * 1e3:.1f} ms; "
        f"compilations of the masked program: {masked_fn._cache_size()}")
  print("| live experts per edge | masked, random / full | masked, same k / full "
        "| rebuilt / full | rebuild compile s | break-even search steps |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    if "rebuilt" in r:
      gain = 2 * (r["same"] - r["rebuilt"])
      even = f"{r['compile'] / gain:.0f}" if gain > 0 else "never"
      tail = f"{r['rebuilt'] / base:.2f} | {r['compile']:.1f} | {even}"
    else:
      tail = "- | - | -"
    print(f"| {r['k']} of {len(order)} | {r['random'] / base:.2f} | {r['same'] / base:.2f} | {tail} |")


if __name__ == "__main__":
  main()
