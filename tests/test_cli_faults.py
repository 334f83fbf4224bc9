"""A full disk under ``xnas-search``: one line naming the workdir and the
cause, exit status 2, no partial checkpoint (the library's side is tested in
test_checkpointing.py)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
OVERRIDES = {"channels": 4, "num_cells": 3, "limit": 300, "epochs": 4, "batch_size": 16,
             "num_devices": 1, "rebuild_wiped": False, "depthwise_impl": "grouped",
             "figures": False, "tensorboard": False}


def test_a_search_on_a_full_disk_ends_in_one_line(tmp_path):
  disk = tmp_path / "disk"
  os.makedirs(disk)
  if os.geteuid() != 0:
    pytest.skip("mounting a small tmpfs needs root")
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)],
                           capture_output=True, text=True, check=False)
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
  try:
    workdir = str(disk / "w")
    cmd = [sys.executable, "-m", "xnas_jax.main", "--config",
           os.path.join(ROOT, "configs", "digits.py"), "--workdir", workdir, "--noprogress"]
    done = subprocess.run(cmd + [f"--config.{k}={v}" for k, v in OVERRIDES.items()],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    lines = [l for l in done.stderr.strip().splitlines() if not l.startswith("WARNING:absl")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(
        f"xnas-search: error: cannot write checkpoint 1 in {workdir}/checkpoints: "
        "No space left on device ("), lines[:5]
    assert os.listdir(os.path.join(workdir, "checkpoints")) == []
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)
