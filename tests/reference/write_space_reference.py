"""Writes ``space_reference.json``: tiny searches' metrics and genotypes.

Run once on the code before a change that must not alter the DARTS-space
searches (the search spaces becoming data); ``tests/test_space_reference.py``
reruns the same searches and compares every value bit for bit:

  python tests/reference/write_space_reference.py
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from search_configs import FEW_OPS_WITH_NONE, tiny_config  # noqa: E402  pylint: disable=wrong-import-position

# Values of a metrics line that measure the machine, not the search.
TIMING_KEYS = ("epoch_time_s", "compilations", "compile_s", "step_time_s")


def reference_configs():
  """The searches compared: XNAS with its wipeout and a rebuild (xnas op
  set, 1x1-conv cell output), and DARTS's Adam on the fixed-edge topology
  with none (concatenated output), PC-DARTS's partial channels and edge
  normalization, and a perturbation selection."""
  xnas = tiny_config(rebuild_wiped=True)
  xnas.arch_optimizer.zeta = 1e-3
  darts = tiny_config(op_set=FEW_OPS_WITH_NONE, topology="darts", partial_channels=2)
  darts.arch_optimizer.name = "darts_adam"
  fixed = tiny_config(op_set="s2", topology="fixed", selection="perturbation")
  fixed.arch_optimizer.name = "gd_softmax"
  fixed.pt.tune_epochs = 1
  return {"xnas": xnas, "darts_pc": darts, "fixed_pt": fixed}


def cpu() -> str:
  """The processor's model name (XLA's CPU code, so the last bits of float
  sums, depend on it)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  import platform  # pylint: disable=import-outside-toplevel
  return platform.processor() or platform.machine()


def run(config):
  from xnas_jax import train  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as workdir:
    out = train.train_and_evaluate(config, workdir, progress=False)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      lines = [json.loads(l) for l in f]
    with open(os.path.join(workdir, "genotype.json")) as f:
      genotype = json.load(f)
  for line in lines:
    for k in TIMING_KEYS:
      line.pop(k, None)
  return {"metrics": lines, "genotype": genotype,
          "supernet_test_acc": out["summary"]["supernet_test_acc"]}


if __name__ == "__main__":
  result = {name: run(c) for name, c in reference_configs().items()}
  result["cpu"] = cpu()
  path = os.path.join(os.path.dirname(__file__), "space_reference.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {path}")
