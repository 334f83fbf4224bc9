"""Resident memory per epoch over a long tiny search (Linux).

Runs ``xnas-search`` on digits in a subprocess and reads its resident set
(``VmRSS`` in ``/proc/<pid>/status``) each time ``metrics.jsonl`` gains an
epoch: the process as a cluster's memory accounting sees it, with nothing
of the benchmark inside it.  Prints the table, then the growth per epoch
after the warm-up (a least-squares slope over the epochs after
``--warmup``): flat is about 0.

  python benchmarks/memory_soak.py --epochs 40 --batch 32
  python benchmarks/memory_soak.py --epochs 40 --set tensorboard=False --set figures=False

``--set key=value`` (repeatable) passes config overrides, to find where
memory goes by switching parts off.  Exits 1 when the search fails.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_mib(pid: int) -> float | None:
  try:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024
  except OSError:
    return None
  return None


def _epochs_done(path: str) -> int:
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for l in f if l.strip())


def soak(epochs: int, batch: int, overrides: list[str], workdir: str) -> list[tuple[int, float]]:
  """``[(epoch, resident MiB when its metrics line appeared)]``."""
  cmd = [sys.executable, "-m", "xnas_jax.main", "--config", os.path.join(ROOT, "configs", "digits.py"),
         "--workdir", workdir, "--noprogress", f"--config.epochs={epochs}",
         f"--config.batch_size={batch}", "--config.num_devices=1"]
  cmd += [f"--config.{o}" for o in overrides]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  metrics, rows, seen = os.path.join(workdir, "metrics.jsonl"), [], 0
  while proc.poll() is None:
    done = _epochs_done(metrics)
    if done > seen:
      rss = _rss_mib(proc.pid)
      if rss is not None:
        rows.append((done, rss))
      seen = done
    time.sleep(0.02)
  err = proc.stderr.read()
  if proc.returncode != 0:
    print(err[-2000:], file=sys.stderr)
    raise SystemExit(f"the search failed (exit {proc.returncode})")
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=40)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--warmup", type=int, default=3, help="epochs left out of the slope")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as workdir:
    rows = soak(args.epochs, args.batch, args.set, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      steps = json.loads(f.readline()).get("steps", None)
  print(f"digits search, batch {args.batch}, {args.epochs} epochs"
        + (f", {steps} steps an epoch" if steps else "")
        + (f", {' '.join(args.set)}" if args.set else ""))
  print(f"{'epoch':>6} {'resident MiB':>13}")
  for epoch, rss in rows:
    print(f"{epoch:>6} {rss:>13.1f}")
  after = [(e, r) for e, r in rows if e > args.warmup]
  if len(after) >= 3:
    e, r = np.array(after, dtype=float).T
    slope = np.polyfit(e, r, 1)[0]
    print(f"growth after epoch {args.warmup}: {slope:+.3f} MiB an epoch "
          f"({r[-1] - r[0]:+.1f} MiB over epochs {int(e[0])}-{int(e[-1])})")


if __name__ == "__main__":
  main()
