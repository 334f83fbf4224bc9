"""What a choice point in a user's model costs against the supernet's mixed op.

One normal DARTS cell written as a user's model (``xnas_jax.Choice`` per
edge over the op set's operations, the same stem, preprocessing and head as
the supernet) against ``supernet.Supernet`` of one cell, on the same input:
the search's gradient program (summed loss w.r.t. the weights and the
per-example mixture weights), compile time and time per call, every expert
live, and with one expert live per edge (what a wiped or unsampled expert
saves: the model's candidates run under ``nn.cond`` as the supernet's
experts run under ``lax.cond``; the live one is ``skip_connect``).  The supernet scans its 14 edges
(``lax.scan``, one trace per cell); the model traces each choice point.
Median of ``--repeats`` rounds of 3 calls after the compiling call.

  python benchmarks/choice_cost.py --op_set darts --channels 8 --batch 32
"""
from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from xnas_jax import ops as ops_lib
from xnas_jax import search_space
from xnas_jax import supernet as supernet_lib
from xnas_jax.choice import Choice
from xnas_jax.spaces import model as model_space

import timing

OP_SET, C = "s3", 8  # set from the command line before the model is built


def zero(x, train):
  del train
  return jnp.zeros_like(x)


class OneCell(nn.Module):
  """One normal DARTS cell of ``OP_SET``, a choice point per edge."""
  op_set: str = "s3"
  channels: int = 8

  @nn.compact
  def __call__(self, x, train=True):
    c, ops = self.channels, search_space.OP_SETS[self.op_set]
    s = supernet_lib.Stem(3 * c, name="stem")(x, train)
    states = [ops_lib.ReLUConvBN(c, name="pre0")(s, train),
              ops_lib.ReLUConvBN(c, name="pre1")(s, train)]
    for k, (src, dst) in enumerate(search_space.darts_edges()):
      cands = [zero if op == "none" else ops_lib.make_op(op, c, 1) for op in ops]
      y = Choice(cands, label=f"edge{k}", names=ops, name=f"edge{k}")(states[src], train)
      if dst == len(states):
        states.append(y)
      else:
        states[dst] = states[dst] + y
    return supernet_lib.Head(10, name="head")(jnp.concatenate(states[2:], axis=-1))


def gradient_program(net, weights):
  def loss(params, u, stats, masks, x, y):
    logits, _ = net.apply({"params": params, "batch_stats": stats}, x, u, masks, train=True)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def measure(fn, args, repeats):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  return compile_s, timing.median_call_time(fn, args, repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--op_set", default="s3", choices=sorted(search_space.OP_SETS))
  parser.add_argument("--channels", type=int, default=8)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--size", type=int, default=16, help="image side")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  space = search_space.get_search_space(args.op_set)
  n_ops, e = space.num_ops, space.num_edges
  x = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, 3))
  y = jnp.arange(args.batch) % 10
  sup = supernet_lib.Supernet(space, 10, channels=args.channels, num_cells=1)
  model = OneCell(args.op_set, args.channels)
  spec, kwargs = model_space.spec_of(model)
  mnet = model_space.ModelSupernet(model_space.space_from(
      model_space.discover(model, x.shape[1:], 10), spec, kwargs), 10)
  # One live expert per edge: skip_connect (where the op set has it), so that
  # the convolutions are what the masks save.
  live_op = space.ops.index("skip_connect") if "skip_connect" in space.ops else 0
  one = jnp.zeros((e, n_ops), bool).at[:, live_op].set(True)
  rows = []
  for name, net, masks_all, masks_one, u in (
      ("supernet (lax.scan over edges)", sup,  # one cell: no reduction cell
       {t: jnp.ones((e, n_ops), bool) for t in space.cell_types},
       {t: one for t in space.cell_types},
       {t: jnp.full((1, args.batch, e, n_ops), 1 / n_ops) for t in space.cell_types}),
      ("user's model (Choice per edge)", mnet,
       {f"edge{k}": jnp.ones((1, n_ops), bool) for k in range(e)},
       {f"edge{k}": one[k:k + 1] for k in range(e)},
       {f"edge{k}": jnp.full((1, args.batch, 1, n_ops), 1 / n_ops) for k in range(e)})):
    v = net.init(jax.random.key(1), x)
    fn = gradient_program(net, u)
    for live, masks in (("all", masks_all), ("skip only", masks_one)):
      c, t = measure(fn, (v["params"], u, v["batch_stats"], masks, x, y), args.repeats)
      rows.append((name, live, c, t))
  print(f"One normal cell, op set {args.op_set} ({n_ops} ops x {e} edges), C={args.channels}, "
        f"batch {args.batch}, {args.size}x{args.size}, {jax.devices()[0].platform}")
  print(f"{'network':34s} {'live experts':14s} {'compile s':>10s} {'ms / call':>10s}")
  for name, live, c, t in rows:
    print(f"{name:34s} {live:14s} {c:10.2f} {1e3 * t:10.2f}")
  base = {live: t for name, live, _, t in rows if name.startswith("supernet")}
  for name, live, _, t in rows:
    if not name.startswith("supernet"):
      print(f"choice point / mixed op, {live} live: {t / base[live]:.2f}x")


if __name__ == "__main__":
  main()
