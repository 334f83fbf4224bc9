"""One run per workdir (``xnas_jax.workdir_lock``): a live holder refuses a
second run in one line; a dead holder's lock is taken over with a warning."""
import json
import os
import subprocess
import sys
import time

import pytest

from search_configs import tiny_config
from xnas_jax import train
from xnas_jax import workdir_lock

HOLD = ("import sys, time; from xnas_jax import workdir_lock; "
        "workdir_lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)")


def test_a_live_holder_refuses_a_second_search_in_one_line(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.WorkdirInUse,
                       match=f"{tmp_path} is in use by process {holder.pid} on "):
      train.train_and_evaluate(tiny_config(), str(tmp_path), progress=False)
    assert not os.path.exists(tmp_path / "checkpoints")  # refused before anything was written
  finally:
    holder.kill()
    holder.wait()


def test_a_dead_holders_lock_is_taken_over_and_released(tmp_path, capsys):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(tmp_path / ".lock", "w") as f:
    json.dump({"pid": dead.pid, "host": os.uname().nodename, "since": time.time()}, f)
  with workdir_lock.hold(str(tmp_path)) as path:
    with open(path) as f:
      assert json.load(f)["pid"] == os.getpid()
    other = subprocess.run([sys.executable, "-c", "import sys; from xnas_jax import "
                            "workdir_lock; workdir_lock.acquire(sys.argv[1])", str(tmp_path)],
                           capture_output=True, text=True, check=False)
    assert other.returncode == 1  # held by this live process now
    assert f"is in use by process {os.getpid()}" in other.stderr
  assert not os.path.exists(tmp_path / ".lock")
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f"taking over the lock of process {dead.pid}" in err[0]


def test_the_cli_refuses_with_exit_code_2(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    proc = subprocess.run([sys.executable, "-m", "xnas_jax.retrain_main", "--genotype",
                           "darts_v2", "--config", os.path.join(os.path.dirname(__file__), "..",
                                                               "configs", "digits_eval.py"),
                           "--workdir", str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"in use by process {holder.pid}" in lines[0], proc.stderr
  finally:
    holder.kill()
    holder.wait()
