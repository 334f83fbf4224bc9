"""Throughput and peak memory of one search step (weight step + architecture step).

The paper's CIFAR-10 search configuration (``configs/cifar10_xnas.py``: XNAS
op set, 8 cells, C = 16, batch 96) on synthetic 32x32 data, for

* XNAS, first order, every expert live;
* XNAS with half of each edge's experts wiped (the wipeout mask set by hand);
* DARTS first order (Adam on the logits);
* GDAS (one sampled expert per edge per step, the others skipped), XNAS op set;
* partial channels (PC-DARTS, K = 4, edge normalization): ``xnas_pc4`` (XNAS's
  experts and rewards) and ``darts_pc4`` (PC-DARTS itself: DARTS's op set and
  Adam), against the ``xnas`` and ``darts`` rows at K = 1;
* XNAS with the amended hypergradient (Bi et al.);
* XNAS in bfloat16 compute mode;
* K seeds vmapped into one program (``num_seeds = K``; images/s counts all K);
* NAS-Bench-201's supernet (``nb201_darts``: first-order DARTS, Adam on the
  architecture; ``nb201_xnas``: XNAS), at C = 16 and N = 5 cells per stage;
* with ``--vs-torch``, the same searches in PyTorch on the same network
  (``benchmarks/torch_search.py``: ``torch_darts``, DARTS's first-order step
  with the DARTS op set; ``torch_xnas``, XNAS's step with per-example rewards;
  ``benchmarks/torch_nb201.py``: ``torch_nb201``, the NAS-Bench-201 release's
  ``TinyNetworkDarts`` with darts-pt's first-order step, the twin of both
  NAS-Bench-201 rows), and the JAX/PyTorch speed ratios of the pairs measured
  in this run.

Each row runs in its own process (so that compilation caches and the memory
high-water mark start fresh): it times ``--steps`` search steps after one
warm-up step (``timing``), exactly as ``train.train_and_evaluate`` runs them (index batches
on the device, async dispatch, one sync at the end).  Peak memory is the
device's ``peak_bytes_in_use`` on a GPU and the process's peak RSS on a CPU
(``peak_memory``: for JAX it includes XLA's compilation; like the search
loop, the JAX rows hand the compiler's freed heap back after each compilation,
``host_memory``, unless ``--keep-heap``); the pairs' table
adds the steady peak, the most the process held during the timed steps.
"min/epoch" is the time of one CIFAR-10 search epoch (25 000 training images
at this batch size), the unit the papers report (XNAS: 8.5 min on a GTX
1080Ti at batch 96; DARTS first order: about 12.5 min at batch 64).

  python benchmarks/search_step.py                         # the paper's config
  python benchmarks/search_step.py --batch 8 --steps 2     # a CPU-sized run
  python benchmarks/search_step.py --json /tmp/search_step.json
  python benchmarks/search_step.py --batch 4 --steps 3 --rows xnas darts --vs-torch
  python benchmarks/search_step.py --batch 16 --steps 5 --rows nb201_darts nb201_xnas --vs-torch
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import peak_memory
import timing

ROWS = ("xnas", "xnas_half_wiped", "darts", "gdas", "xnas_pc4", "darts_pc4", "xnas_amended",
        "xnas_bfloat16", "xnas_seeds", "nb201_darts", "nb201_xnas")
TORCH_ROWS = {"darts": "torch_darts", "xnas": "torch_xnas",  # JAX row -> its PyTorch twin
              "nb201_darts": "torch_nb201", "nb201_xnas": "torch_nb201"}
CIFAR_SEARCH_IMAGES = 25_000


def config_for(row: str, args):
  from xnas_jax import config_defaults  # pylint: disable=import-outside-toplevel
  c = config_defaults.base_config()
  c.dataset, c.op_set, c.channels, c.num_cells = "synthetic_cifar10", "xnas", 16, 8
  c.batch_size, c.epochs, c.num_devices = args.batch, 50, 1
  c.augment.pad, c.augment.flip = 4, True
  if args.channels:
    c.channels = args.channels
  if row.startswith(("nb201", "torch_nb201")):
    c.space, c.op_set, c.num_cells = "nb201", "nb201", 5  # N = 5 cells per stage
    if row in ("nb201_darts", "torch_nb201"):
      c.arch_optimizer.name = "darts_adam"
  elif row in ("darts", "torch_darts", "darts_pc4"):
    c.arch_optimizer.name, c.op_set = "darts_adam", "darts"  # DARTS's 8 ops, concat output
  elif row == "gdas":
    c.arch_optimizer.name = "gdas"
  elif row == "xnas_amended":
    c.arch_gradient = "amended"
  elif row == "xnas_bfloat16":
    c.compute_dtype = "bfloat16"
  elif row == "xnas_seeds":
    c.num_seeds = args.seeds
  if row in ("xnas_pc4", "darts_pc4"):
    c.partial_channels = 4  # PC-DARTS's K on CIFAR-10, with edge normalization
  if getattr(args, "cells", 0):
    c.num_cells = args.cells
  return c


def half_wiped(state, key):
  """The state with a random half of each edge's experts wiped (mask False)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  def wipe(path, leaf):
    names = [getattr(p, "name", getattr(p, "key", None)) for p in path]
    if "mask" not in names or leaf.dtype != jnp.bool_:
      return leaf
    scores = jax.random.uniform(jax.random.fold_in(key, len(names)), leaf.shape)
    keep = scores < jnp.median(scores, axis=-1, keepdims=True)
    keep = keep.at[..., 0].set(True)  # at least one expert per edge
    return leaf & keep
  return dict(state, arch_opt_state=jax.tree_util.tree_map_with_path(wipe,
                                                                     state["arch_opt_state"]))


def step_function(row: str, args):
  """``(one_step, config, k)``: ``one_step(i)`` runs the row's ``i``-th search
  step (its ``K = k`` seeds vmapped when ``k > 1``) and returns ``(state,
  metrics)``."""
  import functools  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from xnas_jax import input_pipeline, search_setup, search_steps, seeds  # pylint: disable=import-outside-toplevel
  config = config_for(row, args)
  configs = seeds.seed_configs(config)
  searches = [search_setup.build_search(c) for c in configs]
  search = searches[0]
  fns = search_steps.step_functions(search)
  states = [search_setup.init_state(s, jax.random.key(c.seed)) for s, c in zip(searches, configs)]
  if row == "xnas_half_wiped":
    states = [half_wiped(s, jax.random.key(7)) for s in states]
  k = len(configs)
  data = [(s.data.train.images, s.data.train.labels, s.data.mean, s.data.std) for s in searches]
  vdata = [(s.data.val.images, s.data.val.labels, s.data.mean, s.data.std) for s in searches]
  b, n = config.batch_size, len(search.data.train)
  idx = [input_pipeline.epoch_batches(jax.random.key(c.seed), n, b, 0) for c in configs]
  if k == 1:
    state, train_data, val_data = states[0], data[0], vdata[0]
    tr = va = jax.device_put(idx[0])
    step = functools.partial(search_steps.search_step, search, fns)
  else:
    stack = seeds.stack
    state, train_data, val_data = stack(states), stack(data), stack(vdata)
    tr = va = jax.device_put(np.stack(idx, axis=1))
    step = jax.jit(jax.vmap(functools.partial(search_steps.search_step, search, fns)),
                   donate_argnums=0)
  train_data, val_data = jax.device_put(train_data), jax.device_put(val_data)

  def one_step(i):
    nonlocal state
    state, m = step(state, train_data, val_data, tr[i % len(tr)], va[i % len(va)])
    return state, m

  return one_step, config, k


def measure(row: str, args) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from xnas_jax import host_memory  # pylint: disable=import-outside-toplevel
  if not args.keep_heap:
    host_memory.install()  # as train.train_and_evaluate does
  one_step, config, k = step_function(row, args)
  b = config.batch_size
  compile_s, step_s, (state, m) = timing.warm_then_time(one_step, args.steps,
                                                         jax.block_until_ready)
  steady = peak_memory.steady_peak_bytes()
  dev = jax.devices()[0]
  stats = dev.memory_stats() if dev.platform != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    peak, peak_kind = stats["peak_bytes_in_use"], "device"
  else:
    peak, peak_kind = peak_memory.process_peak_bytes(), "host RSS"
  images = k * b
  return {"row": row, "platform": dev.platform, "device": dev.device_kind, "batch": b,
          "seeds": k, "channels": config.channels, "step_s": step_s,
          "images_per_s": images / step_s,
          "min_per_cifar_epoch": CIFAR_SEARCH_IMAGES / b * step_s / 60,
          "peak_bytes": int(peak), "peak_kind": peak_kind, "first_step_s": compile_s,
          "steady_peak_bytes": steady if peak_kind == "host RSS" else int(peak),
          "finite": bool(np.isfinite(np.asarray(m)).all())}


def measure_torch(row: str, args) -> dict:
  """The PyTorch twin of a row: same network, batch and config (and, for the
  DARTS space, the same weights)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import torch_search  # pylint: disable=import-outside-toplevel
  from xnas_jax import input_pipeline, search_setup  # pylint: disable=import-outside-toplevel
  config = config_for(row, args)
  search = search_setup.build_search(config)
  b = config.batch_size
  device = args.torch_device
  if row == "torch_nb201":
    import torch_nb201  # pylint: disable=import-outside-toplevel
    torch.manual_seed(config.seed)
    runner = torch_nb201.DartsSearch(torch_nb201.TinyNetworkDarts(
        config.channels, config.num_cells, search.data.num_classes,
        search.data.image_shape[-1]).train(), device=device)
  else:
    x0 = jax.numpy.zeros((b,) + search.data.image_shape)
    net = torch_search.Network(search.net, search.data.image_shape[-1])
    net.load_jax(search.net.init(jax.random.key(config.seed), x0)).train()
    masks = {t: torch.from_numpy(np.array(m)) for t, m in search.net.default_masks().items()}
    runner = (torch_search.DartsSearch(net, masks, device=device) if row == "torch_darts" else
              torch_search.XnasSearch(net, masks, search.arch_opt.learning_rates,
                                      search.arch_opt.horizons, config.arch_optimizer.grad_bound,
                                      device=device))
  d = search.data

  def batch(split, i):
    idx = input_pipeline.epoch_batches(jax.random.key(i), len(split), b, 0)[0]
    x = input_pipeline.standardize(split.images[idx], d.mean, d.std)
    return (torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy()).to(device),
            torch.from_numpy(np.array(split.labels[idx])).long().to(device))

  batches = [batch(d.train, i) + batch(d.val, i + 100) for i in range(args.steps + 1)]
  cuda = device.startswith("cuda")
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  first, step_s, loss = timing.warm_then_time(lambda i: runner.step(*batches[i]), args.steps,
                                              timing.torch_sync(device))
  if cuda:
    peak = steady = torch.cuda.max_memory_allocated()
  else:
    peak, steady = peak_memory.process_peak_bytes(), peak_memory.steady_peak_bytes()
  where = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} threads"
  return {"row": row, "platform": "torch-cuda" if cuda else "torch-cpu",
          "device": f"torch {torch.__version__}, {where}", "batch": b, "seeds": 1,
          "channels": config.channels, "step_s": step_s, "images_per_s": b / step_s,
          "min_per_cifar_epoch": CIFAR_SEARCH_IMAGES / b * step_s / 60, "peak_bytes": int(peak),
          "peak_kind": "device" if cuda else "host RSS", "first_step_s": first,
          "steady_peak_bytes": steady,
          "finite": bool(np.isfinite(float(loss)))}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=96)
  ap.add_argument("--channels", type=int, default=0, help="override C (default 16)")
  ap.add_argument("--cells", type=int, default=0,
                  help="override the cells (default 8; NAS-Bench-201: 5 per stage)")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--seeds", type=int, default=2, help="K of the vmapped-seeds row")
  ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
  ap.add_argument("--vs-torch", action="store_true",
                  help="also time the PyTorch twins of the xnas and darts rows")
  ap.add_argument("--torch-device", default="cpu", help="the PyTorch rows' device (cuda)")
  ap.add_argument("--json", default="")
  ap.add_argument("--keep-heap", action="store_true",
                  help="JAX rows: without host_memory's trim after each compilation")
  ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: run one row
  args = ap.parse_args()
  if args.one:
    run = measure_torch if args.one.startswith("torch_") else measure
    print(json.dumps(run(args.one, args)))
    return
  rows = list(args.rows)
  if args.vs_torch:
    rows += list(dict.fromkeys(TORCH_ROWS[r] for r in args.rows if r in TORCH_ROWS))
  results, failed = [], []
  for row in rows:
    cmd = [sys.executable, __file__, "--one", row, "--batch", str(args.batch), "--steps",
           str(args.steps), "--seeds", str(args.seeds), "--channels", str(args.channels),
           "--cells", str(args.cells)]
    cmd += ["--keep-heap"] if args.keep_heap else []
    cmd += ["--torch-device", args.torch_device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
      print(f"{row}: failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
      failed.append(row)
      continue
    results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if len(results) == 1:
      r = results[0]
      print(f"{r['platform']} ({r['device']}), batch {r['batch']}, C={r['channels']}, "
            f"{args.steps} timed steps")
      print("| row | images/s | step ms | min/epoch (CIFAR) | speed / xnas | peak MiB "
            "| peak / xnas | first step s |")
      print("|---|---|---|---|---|---|---|---|")
    r, base = results[-1], results[0]
    print(f"| {r['row']}{' (K=%d)' % r['seeds'] if r['seeds'] > 1 else ''} "
          f"| {r['images_per_s']:.1f} | {r['step_s'] * 1e3:.0f} | {r['min_per_cifar_epoch']:.1f} "
          f"| {r['images_per_s'] / base['images_per_s']:.2f} | {r['peak_bytes'] / 2**20:.0f} "
          f"| {r['peak_bytes'] / base['peak_bytes']:.2f} | {r['first_step_s']:.1f} |", flush=True)
  by_row = {r["row"]: r for r in results}
  pairs = [(j, t) for j, t in TORCH_ROWS.items() if j in by_row and t in by_row]
  if pairs:
    print("\n| search | JAX step ms | PyTorch step ms | JAX speed / PyTorch | JAX peak / PyTorch "
          "| JAX steady peak / PyTorch |")
    print("|---|---|---|---|---|---|")
    for j, t in pairs:
      rj, rt = by_row[j], by_row[t]
      steady = (f"{rj['steady_peak_bytes'] / rt['steady_peak_bytes']:.2f}"
                if rj.get("steady_peak_bytes") and rt.get("steady_peak_bytes") else "n/a")
      print(f"| {j} | {rj['step_s'] * 1e3:.0f} | {rt['step_s'] * 1e3:.0f} "
            f"| {rt['step_s'] / rj['step_s']:.2f} | {rj['peak_bytes'] / rt['peak_bytes']:.2f} "
            f"| {steady} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  main()
