"""Bi et al.'s S2 at digits scale (sec. 4.1.3): the amended gradient against
first-order DARTS, with an architecture per cell.

The space: fixed edges, ``skip_connect`` and ``sep_conv_3x3``, and every cell
its own architecture (``configs/digits_amended_s2.py``).  For each gradient
(``first_order``, ``amended``), one ``num_seeds``-seed search on digits (the
seeds vmapped in one program); each seed's genotype is retrained on digits in
a network of the same depth (an architecture per cell fixes the depth), with
the retraining seed equal to the search seed.  Prints, per gradient, the
share of ``skip_connect`` among each layer's 8 edges (mean over seeds) and
the retrained test accuracy (mean and spread).  The paper's observation is
that DARTS without the amending term fills the deep cells with skips.
Results are written as they come (``--json``).

  python experiments/amended_s2.py --json docs/amended_s2.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from xnas_jax import config_defaults, retrain, train

GRADIENTS = ("first_order", "amended")


def search_config(gradient: str, args):
  c = config_defaults.base_config()
  c.op_set, c.topology, c.arch_sharing = "s2", "fixed", "cell"
  c.arch_optimizer.name = "darts_adam"
  c.arch_gradient = gradient
  c.epochs, c.seed, c.num_seeds = args.epochs, args.seeds[0], len(args.seeds)
  c.channels, c.num_cells, c.num_devices = args.channels, args.cells, 1
  c.figures = False
  return c


def eval_config(seed: int, args):
  c = config_defaults.eval_config()
  c.seed, c.epochs, c.num_devices, c.num_cells = seed, args.retrain_epochs, 1, args.cells
  c.figures = False
  return c


def skip_share(genotype) -> list[float]:
  """Per layer, the share of its edges that are ``skip_connect``."""
  return [sum(op == "skip_connect" for op, _ in cell) / len(cell) for cell in genotype.cells]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--gradients", nargs="+", default=list(GRADIENTS))
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--epochs", type=int, default=5, help="search epochs")
  ap.add_argument("--channels", type=int, default=8, help="search supernet channels")
  ap.add_argument("--cells", type=int, default=5, help="cells (searched and retrained)")
  ap.add_argument("--retrain-epochs", type=int, default=10)
  ap.add_argument("--json", default="")
  args = ap.parse_args()
  results = {"settings": vars(args), "rows": {}}
  for gradient in args.gradients:
    t0 = time.time()
    with tempfile.TemporaryDirectory() as workdir:
      out = train.train_and_evaluate(search_config(gradient, args), workdir, progress=False)
    search_s = time.time() - t0
    shares, accs = [], []
    for seed, genotype in zip(args.seeds, out["genotypes"]):
      with tempfile.TemporaryDirectory() as workdir:
        r = retrain.train_and_evaluate(eval_config(seed, args), genotype, workdir,
                                       progress=False)
      shares.append(skip_share(genotype))
      accs.append(r["summary"]["test_acc"])
    results["rows"][gradient] = {
        "skip_share_per_layer": np.mean(shares, axis=0).round(3).tolist(),
        "skip_share_per_seed": shares, "test_acc": accs,
        "test_acc_mean": float(np.mean(accs)), "test_acc_std": float(np.std(accs)),
        "search_s": round(search_s, 1),
        "genotypes": [g.to_dict() for g in out["genotypes"]]}
    row = results["rows"][gradient]
    print(f"{gradient:12s} skip share per layer {row['skip_share_per_layer']}  "
          f"retrained {row['test_acc_mean']:.4f} +- {row['test_acc_std']:.4f}  "
          f"search {search_s:.0f} s", flush=True)
    if args.json:
      os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
      with open(args.json, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
