"""DARTS-PT's Table 2 design at digits scale: DARTS, SDARTS-RS, SDARTS-ADV and
SGAS supernets, each with magnitude and with perturbation (DARTS-PT) selection.

For each supernet, one ``num_seeds``-seed search on digits in the DARTS space
(the seeds vmapped in one program) with ``selection = "perturbation"``; each
seed gives a magnitude genotype and a DARTS-PT genotype, and each genotype is
retrained on digits with the retraining seed equal to the search seed.
SGAS decides its edges during the search, so its two rows are two searches:
``sgas`` (selection by magnitude, each edge's op by its weight) and
``sgas_pt`` (SGAS+PT: each edge's op by perturbation when SGAS decides it).
Prints, per supernet and selection: ``skip_connect`` edges chosen (of 16),
the retrained test accuracy (mean and spread over seeds) and the time of
the search with its selection.  SGAS decides its 8 edges of each cell type
at the end of epochs ``1 .. 8`` (``decision_start_epoch = 1``,
``decision_interval = 1``), so it needs ``--epochs`` >= 9; the others run
the same epochs.  Results are written as they come (``--json``), so a
cut-short run keeps what it finished.

  python experiments/sdarts_sgas_pt.py --json docs/sdarts_sgas_pt.json
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

SUPERNETS = ("darts_adam", "sdarts_rs", "sdarts_adv", "sgas", "sgas_pt")
# The selections a supernet's row reports: SGAS's ops are chosen during the
# search, so each of its searches gives one of the two rows.
ROWS = {"sgas": ("magnitude",), "sgas_pt": ("perturbation",)}


def search_config(name: str, args):
  c = config_defaults.base_config()
  c.op_set, c.epochs, c.seed, c.num_seeds = "darts", args.epochs, args.seeds[0], len(args.seeds)
  c.channels, c.num_cells, c.num_devices = args.channels, args.cells, 1
  c.selection = "magnitude" if ROWS.get(name) == ("magnitude",) else "perturbation"
  c.pt.tune_epochs = args.tune_epochs
  c.arch_optimizer.name = "sgas" if name == "sgas_pt" else name
  c.arch_optimizer.learning_rate = args.arch_lr
  c.arch_optimizer.decision_start_epoch, c.arch_optimizer.decision_interval = 1, 1
  c.figures = False
  return c


def eval_config(seed: int, args):
  c = config_defaults.eval_config()
  c.seed, c.epochs, c.num_devices = seed, args.retrain_epochs, 1
  c.num_cells = args.retrain_cells
  c.figures = False
  return c


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--supernets", nargs="+", default=list(SUPERNETS))
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--epochs", type=int, default=10, help="search epochs (SGAS needs >= 9)")
  ap.add_argument("--channels", type=int, default=4, help="search supernet channels")
  ap.add_argument("--cells", type=int, default=4, help="search supernet cells")
  ap.add_argument("--retrain_cells", type=int, default=6)
  ap.add_argument("--tune_epochs", type=int, default=1, help="PT tuning epochs between rounds")
  ap.add_argument("--retrain_epochs", type=int, default=8)
  ap.add_argument("--arch_lr", type=float, default=3e-3,
                  help="10x DARTS's, so a digits search moves the logits as far as CIFAR's")
  ap.add_argument("--json", default="")
  args = ap.parse_args()
  results = json.load(open(args.json)) if args.json and os.path.exists(args.json) else {}
  retrained: dict[str, float] = {}

  def save():
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=1)

  for name in args.supernets:
    if name in results:
      continue
    t0 = time.time()
    with tempfile.TemporaryDirectory() as workdir:
      out = train.train_and_evaluate(search_config(name, args), workdir, progress=False)
    search_s = time.time() - t0
    print(f"{name}: search and selection {search_s:.0f} s", flush=True)
    seeds = []
    for summary in out["summaries"]:
      entry = {"seed": summary["seed"], "supernet_val_acc": summary["val_acc"]}
      found = {"magnitude": summary.get("magnitude_genotype", summary["genotype"]),
               "perturbation": summary["genotype"]}
      for sel in ROWS.get(name, ("magnitude", "perturbation")):
        g = found[sel]
        genotype = Genotype.from_dict(g)
        key = json.dumps([g, summary["seed"]])
        if key not in retrained:
          with tempfile.TemporaryDirectory() as workdir:
            retrained[key] = retrain.train_and_evaluate(
                eval_config(summary["seed"], args), genotype, workdir,
                progress=False)["summary"]["test_acc"]
        ops = [op for op, _ in genotype.normal + genotype.reduce]
        entry[sel] = {"genotype": g, "test_acc": retrained[key],
                      "skip_connect": ops.count("skip_connect")}
      seeds.append(entry)
    results[name] = {"supernet": name, "seeds": seeds, "search_and_pt_s": round(search_s, 1),
                     "total_s": round(time.time() - t0, 1)}
    save()
    print(f"{name}: {time.time() - t0:.0f} s", flush=True)
  print(table(results))


def table(results) -> str:
  rows = ["| supernet | selection | skip_connect (of 16) per seed | "
          "retrained test acc (mean ± std) | search + PT (s) |", "|---|---|---|---|---|"]
  for name, r in results.items():
    for sel in ROWS.get(name, ("magnitude", "perturbation")):
      skips = [s[sel]["skip_connect"] for s in r["seeds"]]
      acc = np.array([s[sel]["test_acc"] for s in r["seeds"]])
      rows.append(f"| {r['supernet']} | {sel} | {' / '.join(map(str, skips))} | "
                  f"{acc.mean():.3f} ± {acc.std():.3f} | {r['search_and_pt_s']:.0f} |")
  return "\n".join(rows)


if __name__ == "__main__":
  main()
