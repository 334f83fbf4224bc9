"""Magnitude vs perturbation-based selection in the robustness spaces S2 and S4
(Wang et al., sec. 5-6; Zela et al.'s spaces), for a DARTS and an XNAS supernet.

For each space (S2: skip_connect / sep_conv_3x3; S4: noise / sep_conv_3x3)
and each method (DARTS first order with Adam on the logits; XNAS), one
``num_seeds``-seed search on digits (the seeds vmapped in one program); each
seed's supernet gives a magnitude genotype and a DARTS-PT genotype
(``selection = "perturbation"``); each genotype is retrained on digits with
the retraining seed equal to the search seed.  Prints, per space, method and
selection: parameter-free and noise ops chosen (out of 16 edges) and the
retrained test accuracy (mean and spread over seeds).  Results are written
as they come (``--json``), so a cut-short run keeps what it finished.

  python experiments/pt_vs_magnitude.py --json docs/pt_vs_magnitude.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from xnas_jax import config_defaults, retrain, train
from xnas_jax.genotype import Genotype
from xnas_jax.ops import is_parameter_free

METHODS = ("darts", "xnas")


def search_config(space: str, method: str, args) -> "ml_collections.ConfigDict":
  c = config_defaults.base_config()
  c.op_set, c.epochs, c.seed, c.num_seeds = space, args.epochs, args.seeds[0], len(args.seeds)
  c.channels, c.num_cells = args.channels, args.cells
  c.num_devices = 1
  c.selection = "perturbation"
  c.pt.tune_epochs = args.tune_epochs
  if method == "darts":
    c.arch_optimizer.name = "darts_adam"
    c.arch_optimizer.learning_rate = args.darts_arch_lr
  return c


def eval_config(seed: int, args):
  c = config_defaults.eval_config()
  c.seed, c.epochs, c.num_devices = seed, args.retrain_epochs, 1
  c.num_cells = args.retrain_cells
  return c


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--spaces", nargs="+", default=["s2", "s4"])
  ap.add_argument("--methods", nargs="+", default=list(METHODS))
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--epochs", type=int, default=5, help="search epochs")
  ap.add_argument("--channels", type=int, default=4, help="search supernet channels")
  ap.add_argument("--cells", type=int, default=4, help="search supernet cells")
  ap.add_argument("--retrain_cells", type=int, default=6)
  ap.add_argument("--tune_epochs", type=int, default=1, help="PT tuning epochs between rounds (proj_intv)")
  ap.add_argument("--retrain_epochs", type=int, default=8)
  ap.add_argument("--darts_arch_lr", type=float, default=3e-3,
                  help="10x DARTS's, so a digits search moves the logits as far as CIFAR's")
  ap.add_argument("--json", default="")
  args = ap.parse_args()
  results = json.load(open(args.json)) if args.json and os.path.exists(args.json) else {}
  retrained: dict[str, float] = {}
  for r in results.values():
    for s in r["seeds"]:
      for sel in ("magnitude", "perturbation"):
        retrained[json.dumps([s[sel]["genotype"], s["seed"]])] = s[sel]["test_acc"]

  def save():
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=1)

  for space in args.spaces:
    for method in args.methods:
      name = f"{space}/{method}"
      if name in results:
        continue
      t0 = time.time()
      with tempfile.TemporaryDirectory() as workdir:
        out = train.train_and_evaluate(search_config(space, method, args), workdir,
                                       progress=False)
      search_s = time.time() - t0
      print(f"{name}: search and selection {search_s:.0f} s", flush=True)
      seeds = []
      for summary in out["summaries"]:
        entry = {"seed": summary["seed"], "supernet_val_acc": summary["val_acc"]}
        for sel, g in (("magnitude", summary["magnitude_genotype"]),
                       ("perturbation", summary["genotype"])):
          genotype = Genotype.from_dict(g)
          key = json.dumps([g, summary["seed"]])
          if key not in retrained:
            with tempfile.TemporaryDirectory() as workdir:
              retrained[key] = retrain.train_and_evaluate(
                  eval_config(summary["seed"], args), genotype, workdir,
                  progress=False)["summary"]["test_acc"]
          ops = [op for op, _ in genotype.normal + genotype.reduce]
          entry[sel] = {"genotype": g, "test_acc": retrained[key],
                        "parameter_free": sum(map(is_parameter_free, ops)),
                        "noise": ops.count("noise")}
        seeds.append(entry)
      results[name] = {"space": space, "method": method, "seeds": seeds,
                       "search_and_pt_s": round(search_s, 1),
                       "total_s": round(time.time() - t0, 1)}
      save()
      print(f"{name}: {time.time() - t0:.0f} s", flush=True)
  print(table(results))


def table(results) -> str:
  rows = ["| space | supernet | selection | parameter-free ops (of 16) | noise ops | "
          "retrained test acc (mean ± std) |", "|---|---|---|---|---|---|"]
  for r in results.values():
    for sel in ("magnitude", "perturbation"):
      pf = [s[sel]["parameter_free"] for s in r["seeds"]]
      nz = [s[sel]["noise"] for s in r["seeds"]]
      acc = np.array([s[sel]["test_acc"] for s in r["seeds"]])
      rows.append(f"| {r['space'].upper()} | {r['method'].upper()} | {sel} | "
                  f"{' / '.join(map(str, pf))} | {' / '.join(map(str, nz))} | "
                  f"{acc.mean():.3f} ± {acc.std():.3f} |")
  return "\n".join(rows)


if __name__ == "__main__":
  main()
