"""A search as one job of two processes on this machine (JAX's multi-process
runtime, gloo over TCP between the CPU devices of the two processes).

With two devices, the cross-device sums of the two processes and those of
one process with two host devices add the same two numbers, and a float sum
of two numbers does not depend on their order: the two-process search is
bit-identical to the one-process search on two devices, which is what lets
that search stand for the uninterrupted job here."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
# One cell with two ops per edge (Zela et al.'s S2): on CPUs XLA reduces each
# gradient array on its own, over TCP between processes, so the step's cost
# grows with the supernet's arrays.  Every job here runs the same programs,
# so the compilation cache built by the first serves the others.
SEARCH = ["--config", "configs/digits.py", "--config.channels=4", "--config.num_cells=1",
          "--config.limit=96", "--config.batch_size=16", "--config.num_devices=0",
          "--config.op_set=s2", "--config.epochs=3", "--config.num_seeds=2",
          "--config.depthwise_impl=grouped", "--config.figures=False", "--progress=false"]


def _env(devices: int = 1, process: int | None = None) -> dict:
  """The environment of a CLI run: ``devices`` host devices, and the test
  worker's compilation cache (``conftest.py``), one directory per process of
  a job (two processes writing one cache at once can abort one of them)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  if process is not None and "XNAS_JAX_CACHE" in env:
    env["XNAS_JAX_CACHE"] = os.path.join(env["XNAS_JAX_CACHE"], f"process{process}")
  return env


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _job(workdir, extra=(), port=None, processes=2, timeout=120):
  """Starts the processes of one ``xnas-search`` job; returns them."""
  port = port or _port()
  return [subprocess.Popen(
      [sys.executable, "-m", "xnas_jax.main", *SEARCH, *extra, "--workdir", str(workdir),
       "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", str(processes),
       "--process_id", str(i), f"--distributed_timeout={timeout}"],
      cwd=ROOT, env=_env(process=i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(processes)]


def _finish(procs, timeout=600):
  out = [p.communicate(timeout=timeout) for p in procs]
  return [(p.returncode, o, e) for p, (o, e) in zip(procs, out)]


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(l) for l in f]
  for line in lines:
    for k in ("epoch_time_s", "compilations", "compile_s", "step_time_s"):
      line.pop(k)
  return lines


def _wait_for(path, procs, timeout=600):
  t0 = time.time()
  while not os.path.exists(path):
    assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
    assert time.time() - t0 < timeout, f"{path} did not appear"
    time.sleep(0.05)


def test_two_processes_search_as_one_on_two_devices_and_resume_after_a_kill(tmp_path):
  """A 3-epoch job of two processes searching two seeds, one of them sent
  SIGTERM after the first checkpoint: both stop at the next epoch's start,
  one line each.  Run again, the job ends with the metrics of every epoch and
  the genotypes of an uninterrupted one-process search on two host devices,
  bit for bit; only process 0 wrote the files; each process's runtime
  output is in its log, not on the terminal."""
  one = tmp_path / "one"
  p = subprocess.run([sys.executable, "-m", "xnas_jax.main", *SEARCH,
                      "--workdir", str(one)], cwd=ROOT, env=_env(devices=2),
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr

  job = tmp_path / "job"
  procs = _job(job)
  _wait_for(job / "checkpoint_sums" / "1.json", procs)
  procs[1].send_signal(signal.SIGTERM)  # one process only: the job stops as one
  for code, _, err in _finish(procs):
    lines = [l for l in err.splitlines() if not l.startswith("warning:")]
    assert code == 128 + signal.SIGTERM and len(lines) == 1, err
    assert "stopped by SIGTERM; the next run in this workdir resumes from epoch" in lines[0]
  stopped_at = sorted(int(s) for s in os.listdir(job / "checkpoints") if s.isdigit())
  assert stopped_at and stopped_at[-1] < 3, stopped_at  # the job was cut short
  assert not os.path.exists(job / ".lock") and not os.path.exists(job / ".lock.1")
  results = _finish(_job(job))
  for i, (code, out, err) in enumerate(results):
    assert code == 0, err
    # nothing but warnings on the terminal (this tiny supernet learns little)
    assert all(l.startswith("warning:") for l in err.splitlines()), err
    assert ("genotype:" in out) == (i == 0)  # process 0 reports
  assert _metrics(job) == _metrics(one)
  for name in ("genotype_seed0.json", "genotype_seed1.json"):
    assert (job / name).read_text() == (one / name).read_text()
  assert sorted(os.listdir(job / "logs")) == ["process_0.log", "process_1.log"]
  assert "Gloo" in (job / "logs" / "process_0.log").read_text()


@pytest.mark.parametrize("victim", [1, 0])
def test_a_dead_process_ends_the_other_in_one_line(tmp_path, victim):
  """Either process killed (SIGKILL) in the middle of a search (process 0
  also runs the coordination service): the other exits within seconds,
  status 1, with one line, and the checkpoints written so far stay (the
  resume from them is the first test's)."""
  procs = _job(tmp_path / "w", timeout=60)
  _wait_for(tmp_path / "w" / "checkpoint_sums" / "1.json", procs)
  procs[victim].kill()
  t0 = time.time()
  code, _, err = _finish([procs[1 - victim]], timeout=60)[0]
  took = time.time() - t0
  procs[victim].wait()
  assert code == 1 and took < 30, (code, took, err)
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "another process of the job has stopped" in lines[0], err
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "1")


def test_bad_flags_and_a_bad_job_end_in_one_line(tmp_path):
  """A process id out of range, an unreachable coordinator (nothing listens
  on its port) and a batch the job's devices cannot split: status 2, one
  line naming the value, in every process."""
  base = [sys.executable, "-m", "xnas_jax.main", *SEARCH, "--workdir", str(tmp_path / "a")]
  port = _port()
  cases = [
      (["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
        "--process_id", "2"], "--process_id 2 is not in 0..1"),
      (["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
        "--process_id", "1", "--distributed_timeout=3"],
       f"cannot reach the coordinator 127.0.0.1:{port}"),
      (["--coordinator_address", f"127.0.0.1:{port}", "--process_id", "0"],
       "go together"),
  ]
  for extra, message in cases:
    p = subprocess.run(base + extra, cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and message in lines[0], p.stderr
  for code, _, err in _finish(_job(tmp_path / "b", ["--config.batch_size=15"])):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "batch_size 15 is not divisible by the 2 devices" in lines[0], err
