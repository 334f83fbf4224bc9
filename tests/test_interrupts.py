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

# Two ops per edge (S2): the subject is the stop and the resume, not the experts.
OVERRIDES = {"channels": 4, "num_cells": 3, "limit": 300, "epochs": 4, "batch_size": 16,
             "num_devices": 1, "rebuild_wiped": False, "depthwise_impl": "grouped",
             "figures": False, "tensorboard": False, "op_set": "s2"}
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


def test_a_job_s_processes_agree_on_a_signal_every_few_steps():
  """With ``agree`` (a job of several processes) the catcher asks every
  process at each epoch's start and every ``AGREE_EVERY`` steps, and stops
  when any of them has a signal, its own or another's (SIGTERM then)."""
  from xnas_jax import interrupts  # pylint: disable=import-outside-toplevel
  asked = []
  others = {"signalled": False}

  def agree(flag):
    asked.append(flag)
    return flag or others["signalled"]

  catcher = interrupts.Catcher(agree)
  catcher.check()  # an epoch's start
  for _ in range(2 * interrupts.AGREE_EVERY + 3):
    catcher.check(step=True)
  assert asked == [False, False, False]  # the start, then steps 10 and 20
  catcher.signum = signal.SIGINT
  for _ in range(interrupts.AGREE_EVERY - 4):
    catcher.check(step=True)  # steps 24..29: not asked
  try:
    catcher.check(step=True)  # step 30: asked, and this process has SIGINT
  except interrupts.Interrupted as e:
    assert e.signum == signal.SIGINT and asked[-1] is True
  else:
    raise AssertionError("the catcher did not stop at step 30")
  catcher = interrupts.Catcher(agree)
  others["signalled"] = True
  try:
    catcher.check()
  except interrupts.Interrupted as e:
    assert e.signum == signal.SIGTERM  # another process's signal
  else:
    raise AssertionError("the catcher did not stop on another process's signal")
