"""Memory of the search's gradient program with partial channels (PC-DARTS).

The paper's CIFAR-10 search network (8 cells, C = 16, 32x32 synthetic data)
at K = 1, 2, 4: XLA's own account of the compiled gradient program
(``Compiled.memory_analysis()``: arguments, outputs, temporaries), which is
what a device must hold for one forward + backward, independent of the
compiler's own footprint (the CPU's peak RSS in ``search_step.py`` is mostly
that).  PC-DARTS's claim: 1/K of the channels through the mixed op lets the
batch grow about K-fold at the same memory (batch 256 on CIFAR-10).

  python benchmarks/partial_channels_memory.py --batch 16
  python benchmarks/partial_channels_memory.py --batch 64 --ks 1 4 --ops darts
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp


def measure(k: int, batch: int, op_set: str) -> tuple[int, int, float]:
  """(temporary bytes, argument + output bytes, compile seconds) at ``k``."""
  from xnas_jax import config_defaults, search_setup, search_steps  # pylint: disable=import-outside-toplevel
  c = config_defaults.base_config()
  c.dataset, c.op_set, c.channels, c.num_cells = "synthetic_cifar10", op_set, 16, 8
  c.batch_size, c.num_devices, c.partial_channels = batch, 1, k
  if op_set == "darts":
    c.arch_optimizer.name = "darts_adam"
  search = search_setup.build_search(c)
  state = search_setup.init_state(search, jax.random.key(0))
  masks = search_setup.live_masks(search, state)
  fns = search_steps.step_functions(search)
  x = jnp.zeros((batch,) + search.data.image_shape)
  y = jnp.zeros((batch,), jnp.int32)
  u_full = fns.full_weights(state["arch"], masks, jax.random.key(1), batch)
  t0 = time.perf_counter()
  compiled = fns.grads.lower(state["params"], state["batch_stats"], u_full, masks, x, y,
                             jax.random.key(2)).compile()
  m = compiled.memory_analysis()
  return (int(m.temp_size_in_bytes), int(m.argument_size_in_bytes + m.output_size_in_bytes),
          time.perf_counter() - t0)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
  ap.add_argument("--ops", default="xnas", choices=["xnas", "darts"])
  args = ap.parse_args()
  print(f"{jax.devices()[0].platform}, {args.ops} op set, batch {args.batch}, C=16, 8 cells, 32x32")
  print("| K | temporaries MiB | / K=1 | arguments + outputs MiB | compile s |")
  print("|---|---|---|---|---|")
  base = None
  for k in args.ks:
    temp, io, secs = measure(k, args.batch, args.ops)
    base = base or temp
    print(f"| {k} | {temp / 2**20:.0f} | {temp / base:.2f} | {io / 2**20:.1f} | {secs:.0f} |",
          flush=True)


if __name__ == "__main__":
  main()
