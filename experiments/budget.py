"""What a FLOPs budget does to the digits search.

The default digits search (``configs/digits.py``: XNAS, 5 epochs) without a
budget and under three targets of ``--config.budget.metric=flops`` (the
evaluation network at C = 36, 20 cells, on 8x8 digits: from 14.1 million
multiply-adds with every edge a pooling to 51.0 with every edge a 5x5
separable conv), seeds vmapped in one program per target.  Per seed: the
found cells' multiply-adds and parameters against the target, and with
``--retrain`` the test accuracy of each genotype retrained on digits (6 cells,
C = 8, 8 epochs, as ``experiments/bfloat16_genotype.py`` retrains).

  python experiments/budget.py --json docs/budget.json
  python experiments/budget.py --json docs/budget.json --retrain
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from xnas_jax import budget, config_defaults, retrain, train
from xnas_jax.genotype import Genotype


def search_config(target: float, seeds: list[int], weight: float):
  c = config_defaults.base_config()
  c.seed, c.num_seeds, c.num_devices = seeds[0], len(seeds), 1
  if target > 0:
    c.budget.metric, c.budget.target, c.budget.weight = "flops", target, weight
  return c


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--targets", type=float, nargs="+", default=[0.0, 20.0, 17.0, 15.0],
                  help="millions of multiply-adds; 0: no budget")
  ap.add_argument("--weight", type=float, default=1.0)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--json", default="")
  ap.add_argument("--retrain", action="store_true")
  args = ap.parse_args()
  if args.retrain:
    return retrain_all(args.json)
  results = {"seeds": args.seeds, "weight": args.weight, "runs": []}
  for target in args.targets:
    t0 = time.time()
    with tempfile.TemporaryDirectory() as workdir:
      out = train.train_and_evaluate(search_config(target, args.seeds, args.weight), workdir,
                                     progress=False)
    results["runs"].append({
        "target": target, "search_s": round(time.time() - t0, 1),
        "genotypes": [s["genotype"] for s in out["summaries"]],
        "flops_m": [_cost(s, "flops") for s in out["summaries"]],
        "params_m": [_cost(s, "params") for s in out["summaries"]],
        "val_acc": [s["val_acc"] for s in out["summaries"]]})
    print(f"target {target}: {results['runs'][-1]['flops_m']} ({time.time() - t0:.0f} s)",
          flush=True)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
  print(table(results))


def _cost(summary, metric):
  if f"genotype_{metric}_m" in summary:
    return summary[f"genotype_{metric}_m"]
  return round(budget.genotype_cost(Genotype.from_dict(summary["genotype"]), metric, (8, 8, 1),
                                    10), 4)


def retrain_all(path: str) -> None:
  with open(path) as f:
    results = json.load(f)
  for run in results["runs"]:
    run["test_acc"] = []
    for seed, g in zip(results["seeds"], run["genotypes"]):
      c = config_defaults.eval_config()
      c.seed, c.epochs, c.num_devices, c.num_cells = seed, 8, 1, 6
      with tempfile.TemporaryDirectory() as workdir:
        out = retrain.train_and_evaluate(c, Genotype.from_dict(g), workdir, progress=False)
      run["test_acc"].append(out["summary"]["test_acc"])
      print(f"target {run['target']} seed {seed}: test acc {run['test_acc'][-1]:.3f}",
            flush=True)
    with open(path, "w") as f:
      json.dump(results, f, indent=1)
  print(table(results))


def table(results) -> str:
  rows = ["| target (M mult-adds) | found M mult-adds, per seed | mean | M params, per seed | "
          "supernet val acc | retrained test acc (mean ± std) |", "|---|---|---|---|---|---|"]
  for r in results["runs"]:
    acc = (f"{np.mean(r['test_acc']):.3f} ± {np.std(r['test_acc']):.3f}"
           if r.get("test_acc") else "")
    rows.append(f"| {r['target'] or 'none'} | {' / '.join(f'{x:.1f}' for x in r['flops_m'])} | "
                f"{np.mean(r['flops_m']):.1f} | {' / '.join(f'{x:.2f}' for x in r['params_m'])} "
                f"| {np.mean(r['val_acc']):.3f} | {acc} |")
  return "\n".join(rows)


if __name__ == "__main__":
  main()
