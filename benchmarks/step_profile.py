"""Where one search step's time goes, by kind of operation.

Runs one row of ``search_step.py`` (same config, synthetic 32x32 data), traces
one step after a warm-up with ``jax.profiler`` and attributes the self time of
every XLA operation the trace records to a kind, read from the HLO metadata
of the compiled programs (XLA's dump, written to a temporary folder; the
trace names each operation's module): which
expert or layer the operation came from (``op_name``), and whether it runs in
the forward pass, the rematerialized forward inside the backward pass, or
the backward pass.  Times are summed over the CPU's worker threads, so the
total exceeds the step's wall time when operations run in parallel.

  python benchmarks/step_profile.py --row xnas --batch 16
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

KINDS = (  # (kind, pattern on the op_name), first match wins
    ("batch norm", r"BatchNorm"),
    ("depthwise conv", r"DilConv(_\d)?/Conv_0|DepthwiseConv"),
    ("1x1 conv (dot)", r"DilConv(_\d)?/Conv_1|ReLUConvBN|FactorizedReduce|pre[01]|/out/|Pointwise"),
    ("pooling (max, avg)", r"Pool"),
    ("ReLU", r"(DilConv|ReLUConvBN|FactorizedReduce)[^ ]*/(max|select_n|gt)$"),
    ("stem, head, loss", r"Stem|Head|log_softmax|cross_entropy|Dense"),
    ("mixture (u_i f_i sums, node adds)", r"/mul|/add|dynamic_update_slice|/select_n|/where"),
)


def _op_names(dump_dir: str) -> dict[tuple[str, str], str]:
  """(module name, instruction name) -> op_name metadata, over the optimized
  modules of the dump (the largest of those sharing a name)."""
  largest = {}
  for path in glob.glob(os.path.join(dump_dir, "*cpu_after_optimizations.txt")):
    module = os.path.basename(path).split(".")[1]  # module_NNNN.<name>.cpu_after_...
    if module not in largest or os.path.getsize(path) > os.path.getsize(largest[module]):
      largest[module] = path
  names = {}
  for module, path in largest.items():
    with open(path) as f:
      for line in f:
        m = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = .*?op_name="([^"]*)"', line)
        if m:
          names[(module, m.group(1))] = m.group(2)
  return names


def _phase(op_name: str) -> str:
  if "rematted_computation" in op_name:
    return "recompute"
  return "backward" if "transpose(" in op_name else "forward"


def _kind(op_name: str) -> str:
  for kind, pattern in KINDS:
    if re.search(pattern, op_name):
      return kind
  return "other"


def _self_times(trace_file: str) -> collections.Counter:
  """Self time (us) per (module, operation), nested events subtracted."""
  events = [e for e in json.load(gzip.open(trace_file))["traceEvents"] if e.get("ph") == "X"]
  by_thread = collections.defaultdict(list)
  for e in events:
    by_thread[e["tid"]].append(e)
  times = collections.Counter()
  for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack = []
    for e in evs:
      while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
        stack.pop()
      e["self"] = e["dur"]
      if stack:
        stack[-1]["self"] -= e["dur"]
      stack.append(e)
    for e in evs:
      times[(e.get("args", {}).get("hlo_module", ""), e["name"])] += e["self"]
  return times


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--row", default="xnas", help="a row of search_step.py")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--channels", type=int, default=0)
  ap.add_argument("--top", type=int, default=0,
                  help="also list the N operations with the most self time")
  args = ap.parse_args()
  work = tempfile.mkdtemp(prefix="step_profile_")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_dump_to={work}/hlo --xla_dump_hlo_pass_re=NONE").strip()
  import functools  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import search_step  # pylint: disable=import-outside-toplevel
  from xnas_jax import input_pipeline, search_setup, search_steps  # pylint: disable=import-outside-toplevel
  config = search_step.config_for(args.row, argparse.Namespace(
      batch=args.batch, channels=args.channels, seeds=1))
  search = search_setup.build_search(config)
  fns = search_steps.step_functions(search)
  state = search_setup.init_state(search, jax.random.key(config.seed))
  d = search.data
  train = jax.device_put((d.train.images, d.train.labels, d.mean, d.std))
  val = jax.device_put((d.val.images, d.val.labels, d.mean, d.std))
  idx = jax.device_put(input_pipeline.epoch_batches(jax.random.key(0), len(d.train), args.batch, 0))
  step = functools.partial(search_steps.search_step, search, fns)
  for i in range(2):  # compile, then one untraced step
    state, _ = step(state, train, val, idx[i], idx[i])
    jax.block_until_ready(state)
  jax.profiler.start_trace(f"{work}/trace")
  t0 = time.perf_counter()
  state, _ = step(state, train, val, idx[2], idx[2])
  jax.block_until_ready(state)
  wall = time.perf_counter() - t0
  jax.profiler.stop_trace()
  op_names = _op_names(f"{work}/hlo")
  trace = glob.glob(f"{work}/trace/plugins/profile/*/*.trace.json.gz")[0]
  table, ops = collections.Counter(), collections.Counter()
  for (module, name), us in _self_times(trace).items():
    if name.startswith(("ThunkExecutor", "$", "SlinkyThreadPool", "end:")) or name.startswith(
        ("Pjit", "CommonPjRt", "Handle", "Allocate", "Wait", "Python", "Parse", "DevicePut")):
      continue
    op = op_names.get((module, name))
    ops[(module, name, op)] += us
    if op is None:
      table[("other", "-")] += us
      continue
    table[(_kind(op), _phase(op))] += us
  total = sum(table.values())
  print(f"{args.row}, batch {args.batch}, {jax.devices()[0].platform}: traced step "
        f"{wall * 1e3:.0f} ms (wall, under the profiler); operations' self time "
        f"{total / 1e3:.0f} ms over all threads")
  phases = ("forward", "recompute", "backward")
  print("| kind | " + " | ".join(f"{p} ms" for p in phases) + " | total ms | share |")
  print("|---|" + "---|" * (len(phases) + 2))
  kinds = sorted({k for k, _ in table}, key=lambda k: -sum(table[(k, p)] for p in phases + ("-",)))
  for kind in kinds:
    row = [table[(kind, p)] for p in phases]
    tot = sum(row) + table[(kind, "-")]
    print(f"| {kind} | " + " | ".join(f"{v / 1e3:.0f}" for v in row)
          + f" | {tot / 1e3:.0f} | {tot / total:.0%} |")
  if args.top:
    print(f"\nThe {args.top} operations with the most self time:")
    print("| ms | module | operation | kind, phase | op_name (end) |")
    print("|---|---|---|---|---|")
    for (module, name, op), us in ops.most_common(args.top):
      where = f"{_kind(op)}, {_phase(op)}" if op else "-"
      print(f"| {us / 1e3:.1f} | {module} | {name} | {where} | {(op or '-')[-70:]} |")


if __name__ == "__main__":
  main()
