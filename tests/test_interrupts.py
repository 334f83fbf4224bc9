"""SIGTERM (a cluster's preemption) stops a search at a step boundary: one
line naming the epoch the next run resumes from, the shell's status 143, no
temporary checkpoint left, and the resumed run ends as an uninterrupted one."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

from xnas_jax import config_defaults
from xnas_jax import train

OVERRIDES = {"channels": 4, "num_cells": 3, "limit": 300, "epochs": 4, "batch_size": 16,
             "num_devices": 1, "rebuild_wiped": False, "depthwise_impl": "grouped",
             "figures": False, "tensorboard": False}
TIMING = ("epoch_time_s", "compilations", "compile_s", "step_time_s")


def _config():
  c = config_defaults.base_config()
  for k, v in OVERRIDES.items():
    c[k] = v
  return c


def _lines(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [json.loads(l) for l in f if l.strip()]
  return [{k: v for k, v in l.items() if k not in TIMING} for l in lines]


def test_sigterm_stops_cleanly_and_the_resume_equals_an_uninterrupted_run(tmp_path):
  workdir = str(tmp_path / "stopped")
  root = os.path.join(os.path.dirname(__file__), "..")
  cmd = [sys.executable, "-m", "xnas_jax.main", "--config",
         os.path.join(root, "configs", "digits.py"), "--workdir", workdir, "--noprogress"]
  cmd += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  deadline = time.time() + 600
  while not _lines(workdir) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  done = len(_lines(workdir))
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert 1 <= done < OVERRIDES["epochs"]
  lines = [l for l in err.strip().splitlines() if not l.startswith("WARNING:absl")]
  assert lines == [f"xnas-search: stopped by SIGTERM; the next run in this workdir resumes "
                   f"from epoch {done + 1}"], err
  assert not glob.glob(os.path.join(workdir, "checkpoints", "*tmp*"))

  resumed = train.train_and_evaluate(_config(), workdir, progress=False)
  whole = train.train_and_evaluate(_config(), str(tmp_path / "whole"), progress=False)
  assert _lines(workdir) == _lines(str(tmp_path / "whole"))
  assert resumed["genotype"] == whole["genotype"]
