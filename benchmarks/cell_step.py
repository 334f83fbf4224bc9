"""One search cell's gradient programs: compile time and time per call.

A cell of the paper's CIFAR-10 search network (XNAS op set, every expert
live) at 32x32, C = 16, on random inputs, differentiated as the search
differentiates it: w.r.t. its weights, mixture weights and both inputs (the
weight step's program needs the first, the architecture step's program the
others), and w.r.t. the mixture weights and inputs only.  Median of
``--repeats`` rounds of 3 calls after a warm-up.  Run it at two commits to
compare a change to the cell's structure (its edge scan, the checkpoint).

With ``--variants``, a normal cell's full gradient under each per-backend
choice, one setting changed at a time: every expert under ``lax.cond`` or
always run and masked, the edges in a ``lax.scan`` or unrolled (compile time
too), the depthwise convolution's implementations, and bfloat16 against
float32.  ``ops.DEPTHWISE_AUTO`` and the supernet's defaults are set from it.

  python benchmarks/cell_step.py --batch 16
  python benchmarks/cell_step.py --variants --batch 64 --json /tmp/variants.json
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from xnas_jax import search_space, supernet

import timing


def measure(cell_type: str, wrt: tuple[int, ...], batch: int, size: int, channels: int,
            repeats: int, gate: str = "cond", edge_loop: str = "scan",
            depthwise_impl: str = "auto", dtype: str = "float32") -> tuple[float, float]:
  space = search_space.get_search_space("xnas")
  cell = supernet.SearchCell(space, cell_type, channels, False,
                             tuple(o for o in space.ops if o != "none"), edge_loop=edge_loop,
                             gate=gate, depthwise_impl=depthwise_impl)
  shape = (batch, size, size, channels)
  s0 = jax.random.normal(jax.random.key(0), shape).astype(dtype)
  s1 = jax.random.normal(jax.random.key(1), shape).astype(dtype)
  variables = cell.init(jax.random.key(2), s0, s1)
  params0 = jax.tree.map(lambda a: a.astype(dtype), variables["params"])
  u = jnp.full((space.num_edges, batch, space.num_ops), 1.0 / space.num_ops)
  mask = jnp.ones((space.num_edges, space.num_ops), bool)

  def loss(params, u, s0, s1):
    out, stats = cell.apply({"params": params, "batch_stats": variables["batch_stats"]},
                            s0, s1, u, mask, None, True)
    out = out.astype(jnp.float32)
    return jnp.sum(out * out), stats
  args = (params0, u, s0, s1)
  t0 = time.perf_counter()
  fn = jax.jit(jax.value_and_grad(loss, argnums=wrt, has_aux=True)).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(fn(*args))
  return compile_s, timing.median_call_time(fn, args, repeats)


# The per-backend choices (--variants): each changes one setting of the default cell.
VARIANTS = {"default": {}, "gate=mask": {"gate": "mask"}, "edge_loop=unroll": {"edge_loop": "unroll"},
            "depthwise=shifted": {"depthwise_impl": "shifted"},
            "depthwise=grouped": {"depthwise_impl": "grouped"},
            "depthwise=dense": {"depthwise_impl": "dense"}, "bfloat16": {"dtype": "bfloat16"}}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--size", type=int, default=32)
  ap.add_argument("--channels", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--variants", action="store_true",
                  help="the per-backend choices (lax.cond or masks, scan or unrolled edges, "
                       "depthwise implementations, bfloat16) on a normal cell's gradient")
  ap.add_argument("--json", default="")
  args = ap.parse_args()
  print(f"{jax.devices()[0].platform}, batch {args.batch}, {args.size}x{args.size}, "
        f"C={args.channels}, median of {args.repeats}")
  rows = []
  if args.variants:
    print("| variant | compile s | ms per call | time / default |")
    print("|---|---|---|---|")
    for name, options in VARIANTS.items():
      compile_s, call_s = measure("normal", (0, 1, 2, 3), args.batch, args.size, args.channels,
                                  args.repeats, **options)
      rows.append({"variant": name, "compile_s": compile_s, "call_s": call_s})
      print(f"| {name} | {compile_s:.1f} | {call_s * 1e3:.1f} "
            f"| {call_s / rows[0]['call_s']:.2f} |", flush=True)
  else:
    print("| cell | differentiated w.r.t. | compile s | ms per call |")
    print("|---|---|---|---|")
    for cell_type in ("normal", "reduce"):
      for wrt, name in (((0, 1, 2, 3), "weights, mixture, inputs"), ((1, 2, 3), "mixture, inputs")):
        compile_s, call_s = measure(cell_type, wrt, args.batch, args.size, args.channels,
                                    args.repeats)
        rows.append({"cell": cell_type, "wrt": name, "compile_s": compile_s, "call_s": call_s})
        print(f"| {cell_type} | {name} | {compile_s:.1f} | {call_s * 1e3:.0f} |", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"platform": jax.devices()[0].platform, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
