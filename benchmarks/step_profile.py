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
  python benchmarks/step_profile.py --evalnet --batch 32 --top 12   # the evaluation network
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

KINDS = (  # (kind, pattern on the op_name), first match wins; search and evaluation network
    ("batch norm", r"BatchNorm"),
    ("1x1 conv (dot)", r"dot_general|DilConv(_\d)?/Conv_1|ReLUConvBN|FactorizedReduce|pre[01]|/out/"
                       r"|Pointwise|edge\d+/Conv_1/"),
    ("depthwise conv", r"DilConv(_\d)?/Conv_0|DepthwiseConv|edge\d+/Conv_0/"),
    ("pooling (max, avg)", r"Pool|edge\d+/(max|slice|eq|pad|select_n|add_any|jit\(_pad\)/pad)$"),
    ("ReLU", r"(DilConv|ReLUConvBN|FactorizedReduce)[^ ]*/(max|select_n|gt)$|edge\d+/jit\(relu\)"),
    ("drop-path", r"bernoulli|threefry|cell\d+/div$|cell\d+/jit\(_where\)"),
    ("stem, head, loss", r"Stem|Head|log_softmax|cross_entropy|Dense|aux_head|classifier"
                         r"|EvalNetwork\)/(Conv_0|BatchNorm_0)/"),
    ("optimizer (update, clipping)", r"^jit\((train_step|weight_update|arch_update)\)/[\w;()]+$"),
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


def _search_step(args):
  """One step of a ``search_step.py`` row, as ``step(i)``."""
  import search_step  # pylint: disable=import-outside-toplevel
  one_step, _, _ = search_step.step_function(args.row, argparse.Namespace(
      batch=args.batch, channels=args.channels, seeds=1, cells=args.search_cells))
  return one_step, f"{args.row}, batch {args.batch}"


def _evalnet_step(args):
  """One training step of ``evalnet_step.py``'s JAX row, as ``step(i)``."""
  import evalnet_step  # pylint: disable=import-outside-toplevel
  eargs = argparse.Namespace(batch=args.batch, steps=3, channels=args.channels or 36,
                             cells=args.cells, genotype=args.genotype)
  return evalnet_step.jax_step_function(eargs), (
      f"evaluation network {args.genotype}, C={eargs.channels}, {args.cells} cells, "
      f"batch {args.batch}")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--row", default="xnas", help="a row of search_step.py")
  ap.add_argument("--evalnet", action="store_true",
                  help="profile evalnet_step.py's JAX training step instead of a search row")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--channels", type=int, default=0)
  ap.add_argument("--cells", type=int, default=20, help="--evalnet: the network's cells")
  ap.add_argument("--genotype", default="darts_v2", help="--evalnet: the genotype trained")
  ap.add_argument("--search-cells", type=int, default=0,
                  help="a search row's cells (default: the row's own)")
  ap.add_argument("--top", type=int, default=0,
                  help="also list the N operations with the most self time")
  args = ap.parse_args()
  work = tempfile.mkdtemp(prefix="step_profile_")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_dump_to={work}/hlo --xla_dump_hlo_pass_re=NONE").strip()
  import jax  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  step, label = (_evalnet_step if args.evalnet else _search_step)(args)
  for i in range(2):  # compile, then one untraced step
    jax.block_until_ready(step(i))
  jax.profiler.start_trace(f"{work}/trace")
  t0 = time.perf_counter()
  jax.block_until_ready(step(2))
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
  print(f"{label}, {jax.devices()[0].platform}: traced step "
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
