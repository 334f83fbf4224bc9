"""Does the amended gradient keep skip_connect from taking over? (Bi et al., sec. 3.2)

Runs DARTS (Adam on the logits, 8-op space with ``none``) on digits in the
fixed-edge space (node j fed by the cell input 0 and node j+1's predecessor,
8 edges), first order against amended, for several seeds, and prints the
fraction of skip_connect among the normal cell's 8 chosen ops after each
epoch (mean and spread over seeds).  The architecture learning rate is 10x
DARTS's, so that a digits search of a few minutes moves the logits as far as
a long CIFAR search does.

  python experiments/fixed_edge_skip.py --epochs 20 --seeds 0 1 2 --json /tmp/skip.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

from xnas_jax import config_defaults, train


def config_for(method: str, seed: int, epochs: int, arch_lr: float):
  c = config_defaults.base_config()
  c.op_set, c.topology = "darts", "fixed"
  c.channels, c.num_cells, c.batch_size, c.epochs, c.seed = 4, 3, 32, epochs, seed
  c.arch_optimizer.name = "darts_adam"
  c.arch_optimizer.learning_rate = arch_lr
  c.arch_gradient = method
  return c


def skip_fractions(workdir: str) -> list[float]:
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [float(np.mean([op == "skip_connect" for op, _ in l["genotype"]["normal"]])) for l in lines]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--epochs", type=int, default=20)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--methods", nargs="+", default=["first_order", "amended"])
  ap.add_argument("--arch_lr", type=float, default=3e-3)
  ap.add_argument("--json", default="")
  args = ap.parse_args()
  results = {}
  for method in args.methods:
    for seed in args.seeds:
      with tempfile.TemporaryDirectory() as workdir:
        out = train.train_and_evaluate(config_for(method, seed, args.epochs, args.arch_lr), workdir,
                                       progress=False)
        results[f"{method}/{seed}"] = {"skip": skip_fractions(workdir),
                                       "supernet_test_acc": out["summary"]["supernet_test_acc"]}
      print(method, seed, results[f"{method}/{seed}"], flush=True)
  marks = sorted({1, args.epochs // 4, args.epochs // 2, 3 * args.epochs // 4, args.epochs} - {0})
  print("| arch gradient | " + " | ".join(f"epoch {e}" for e in marks) + " | supernet test acc |")
  print("|---|" + "---|" * (len(marks) + 1))
  for method in args.methods:
    runs = [results[f"{method}/{s}"] for s in args.seeds]
    skip = np.array([r["skip"] for r in runs])
    acc = np.array([r["supernet_test_acc"] for r in runs])
    cells = [f"{skip[:, e - 1].mean():.2f} ± {skip[:, e - 1].std():.2f}" for e in marks]
    print(f"| {method} | " + " | ".join(cells) + f" | {acc.mean():.3f} ± {acc.std():.3f} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
