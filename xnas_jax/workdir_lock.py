"""One run per workdir: a lock file that a killed process does not leave stuck.

Two searches (or retrainings) writing one workdir would interleave their
checkpoints and metrics.  ``hold(workdir)`` creates ``workdir/.lock``
atomically (``O_CREAT | O_EXCL``) with the holder's process id and host, and
removes it when the run ends.  A second run finds the file and is refused at
once, with one line naming the workdir and the holder.  A lock whose holder
is gone (a process killed with SIGKILL, or by a cluster's preemption, leaves
its file behind) is taken over with a one-line warning: on the same host the
process id no longer runs; a lock of another host is trusted, since its
process cannot be checked from here.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from typing import Iterator

from xnas_jax import config_checks

LOCK_NAME = ".lock"


def name_for(process_index: int) -> str:
  """The lock file of one process of a job: ``.lock`` for process 0 (which
  a one-process run takes too), ``.lock.<i>`` for the others."""
  return LOCK_NAME if process_index == 0 else f"{LOCK_NAME}.{process_index}"


class WorkdirInUse(config_checks.ConfigError):
  """Another live process holds the workdir (reported in one line)."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # it exists, under another user
    return True
  return True


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def acquire(workdir: str, name: str = LOCK_NAME) -> str:
  """Creates the lock file ``name``; returns its path.  Raises ``WorkdirInUse``."""
  path = os.path.join(workdir, name)
  me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read(path)
      pid, host = holder.get("pid"), holder.get("host")
      if isinstance(pid, int) and (host != me["host"] or _alive(pid)) and pid != me["pid"]:
        raise WorkdirInUse(f"{workdir} is in use by process {pid} on {host} (its lock file "
                           f"{path}); wait for it to end or use another --workdir") from None
      print(f"warning: {workdir}: taking over the lock of process {pid}, which no longer "
            f"runs", file=sys.stderr)
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    return path
  raise WorkdirInUse(f"{workdir}: could not take its lock file {path}")


def release(path: str) -> None:
  """Removes the lock file if this process still holds it."""
  if _read(path).get("pid") == os.getpid():
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


@contextlib.contextmanager
def hold(workdir: str, name: str = LOCK_NAME) -> Iterator[str]:
  """Holds ``workdir``'s lock (file ``name``) for the duration of the block."""
  path = acquire(workdir, name)
  try:
    yield path
  finally:
    release(path)
