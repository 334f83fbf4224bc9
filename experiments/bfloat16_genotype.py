"""Does the bfloat16 compute mode find float32's genotype on the digits search?

A float32 search is itself only reproducible bit for bit: summing the same
numbers in another order (two devices instead of one) changes its trajectory,
and the XNAS search, with its wipeouts, is a race that such rounding can tip.
So bfloat16 is measured against that floor.  For each seed (the seeds
vmapped in one program), three digits searches with ``configs/digits.py``:

  float32          float32, data-parallel over 2 (host) devices: the reference
  float32_1device  float32 on 1 device: the same arithmetic, summed in another order
  bfloat16         bfloat16 compute, 2 devices

and per seed, how many of the 16 genotype edges (op and input node) each
variant shares with the reference, next to how many two *different* float32
seeds share (what an unrelated search agrees on by chance and by bias).
``--retrain`` then retrains every genotype of the JSON file (digits, 6 cells,
8 channels, 8 epochs, seed = search seed) and adds its test accuracy.

  python experiments/bfloat16_genotype.py --json docs/bfloat16_genotype.json
  python experiments/bfloat16_genotype.py --json docs/bfloat16_genotype.json --retrain
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import argparse  # pylint: disable=wrong-import-position
import itertools  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position
import tempfile  # pylint: disable=wrong-import-position
import time  # pylint: disable=wrong-import-position

import numpy as np  # pylint: disable=wrong-import-position

from xnas_jax import config_defaults, retrain, train  # pylint: disable=wrong-import-position
from xnas_jax.genotype import Genotype  # pylint: disable=wrong-import-position

VARIANTS = {"float32": ("float32", 2), "float32_1device": ("float32", 1),
            "bfloat16": ("bfloat16", 2)}


def search_config(dtype: str, devices: int, seeds: list[int], epochs: int):
  c = config_defaults.base_config()
  c.compute_dtype, c.num_devices, c.epochs = dtype, devices, epochs
  c.seed, c.num_seeds = seeds[0], len(seeds)
  return c


def edges(genotype: dict) -> list[tuple[str, str, int]]:
  return [(t, op, int(i)) for t in ("normal", "reduce") for op, i in genotype[t]]


def shared(a: dict, b: dict) -> dict[str, int]:
  """Edges (op and input), inputs alone, and ops alone that two genotypes share."""
  ea, eb = edges(a), edges(b)
  return {"edges": sum(x == y for x, y in zip(ea, eb)),
          "inputs": sum(x[2] == y[2] for x, y in zip(ea, eb)),
          "ops": sum(x[1] == y[1] for x, y in zip(ea, eb)), "of": len(ea)}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--epochs", type=int, default=5)
  ap.add_argument("--json", default="")
  ap.add_argument("--retrain", action="store_true",
                  help="retrain the genotypes of --json and add their test accuracies")
  args = ap.parse_args()
  if args.retrain:
    return retrain_all(args.json)
  results = {"seeds": args.seeds, "epochs": args.epochs, "variants": {}}
  for name, (dtype, devices) in VARIANTS.items():
    t0 = time.time()
    with tempfile.TemporaryDirectory() as workdir:
      out = train.train_and_evaluate(search_config(dtype, devices, args.seeds, args.epochs),
                                     workdir, progress=False)
    results["variants"][name] = {
        "dtype": dtype, "devices": devices, "search_s": round(time.time() - t0, 1),
        "genotypes": [s["genotype"] for s in out["summaries"]],
        "val_acc": [s["val_acc"] for s in out["summaries"]],
        "supernet_test_acc": [s["supernet_test_acc"] for s in out["summaries"]]}
    print(f"{name}: {time.time() - t0:.0f} s", flush=True)
  ref = results["variants"]["float32"]["genotypes"]
  for v in results["variants"].values():
    v["shared_with_float32"] = [shared(g, r) for g, r in zip(v["genotypes"], ref)]
  results["float32_other_seed"] = [shared(ref[i], ref[j]) | {"seeds": [args.seeds[i], args.seeds[j]]}
                                   for i, j in itertools.combinations(range(len(ref)), 2)]
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  print(table(results))


def retrain_all(path: str) -> None:
  with open(path) as f:
    results = json.load(f)
  for name, v in results["variants"].items():
    v["test_acc"] = []
    for seed, g in zip(results["seeds"], v["genotypes"]):
      c = config_defaults.eval_config()
      c.seed, c.epochs, c.num_devices, c.num_cells = seed, 8, 1, 6
      with tempfile.TemporaryDirectory() as workdir:
        out = retrain.train_and_evaluate(c, Genotype.from_dict(g), workdir, progress=False)
      v["test_acc"].append(out["summary"]["test_acc"])
      print(f"{name} seed {seed}: test acc {v['test_acc'][-1]:.3f}", flush=True)
    with open(path, "w") as f:
      json.dump(results, f, indent=1)
  print(table(results))


def table(results) -> str:
  rows = ["| variant | edges shared with float32, per seed (of 16) | inputs shared | ops shared "
          "| supernet val acc | retrained test acc (mean ± std) | search s |",
          "|---|---|---|---|---|---|---|"]
  fmt = lambda xs, k: " / ".join(str(x[k]) for x in xs)
  for name, v in results["variants"].items():
    s = v["shared_with_float32"]
    acc = (f"{np.mean(v['test_acc']):.3f} ± {np.std(v['test_acc']):.3f}"
           if v.get("test_acc") else "")
    rows.append(f"| {name} | {fmt(s, 'edges')} | {fmt(s, 'inputs')} | {fmt(s, 'ops')} | "
                f"{np.mean(v['val_acc']):.3f} | {acc} | {v['search_s']:.0f} |")
  o = results["float32_other_seed"]
  rows.append(f"| float32, another seed (pairs) | {fmt(o, 'edges')} | {fmt(o, 'inputs')} | "
              f"{fmt(o, 'ops')} | | | |")
  return "\n".join(rows)


if __name__ == "__main__":
  main()
