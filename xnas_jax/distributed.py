"""One search across several processes: JAX's multi-process runtime.

Every process runs the same program (JAX's "multi-controller" model).  After
``start`` has joined them, ``jax.devices()`` lists the devices of every
process and the search's ``("data",)`` mesh (``parallel.data_mesh``) spans
them all: each process loads the same data set and draws the same index
batches from the seed, puts its own devices' share of each batch on them
(``parallel.shard_batches``), and the jitted step's reductions run across
processes.  On CPUs the cross-process reductions go through gloo over TCP.

What differs from one process: files are written by process 0 alone
(``is_primary``); orbax writes a checkpoint from all of them; a signal is
acted on by all processes together, at the same step (``any_process``,
asked every few steps by ``interrupts.Catcher``), since a process that
stopped at another step would leave the others waiting in a reduction; a
process that dies ends the others with one line (``peer_lost``).

``start`` takes the coordinator's address, the number of processes and this
process's id (the CLIs' ``--coordinator_address``, ``--num_processes``,
``--process_id``); without them it joins a cluster that sets them in the
environment (SLURM with more than one task, Open MPI), and otherwise the
program runs as one process.
"""
from __future__ import annotations

import os
import socket
import sys
import time

import jax
import numpy as np

# Environment variables of the launchers whose jobs JAX's
# ``jax.distributed.initialize()`` configures itself, with the process count.
CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


class StartFailed(ValueError):
  """The processes could not be joined (one line: the bad flag or the cause)."""


class PeerLost(RuntimeError):
  """Another process of the job stopped (one line)."""


def cluster_size() -> int:
  """The process count a cluster launcher set in the environment (1: none)."""
  for name in CLUSTER_SIZE_VARIABLES:
    try:
      n = int(os.environ.get(name, "1"))
    except ValueError:
      continue
    if n > 1:
      return n
  return 1


def check_flags(coordinator_address: str | None, num_processes: int | None,
                process_id: int | None) -> str | None:
  """What is wrong with the three flags together (one line), or None."""
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    return ("--coordinator_address, --num_processes and --process_id go together: "
            "give all three or none")
  if not any(given):
    return None
  if num_processes < 1:
    return f"--num_processes {num_processes} must be at least 1"
  if not 0 <= process_id < num_processes:
    return f"--process_id {process_id} is not in 0..{num_processes - 1} (--num_processes {num_processes})"
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    return f"--coordinator_address {coordinator_address!r} is not HOST:PORT"
  return None


def start(coordinator_address: str | None = None, num_processes: int | None = None,
          process_id: int | None = None, timeout_s: int = 300) -> int:
  """Joins this process to the job; returns the number of processes.

  With the three arguments, as given; without them, from a cluster
  launcher's environment (``cluster_size``) or not at all (one process).
  ``timeout_s`` bounds the wait for the coordinator and the other processes,
  and is the heartbeat timeout after which a silent process counts as dead.
  Raises ``StartFailed`` with one line.
  """
  problem = check_flags(coordinator_address, num_processes, process_id)
  if problem:
    raise StartFailed(problem)
  if coordinator_address is None and cluster_size() == 1:
    return 1
  if coordinator_address is not None and num_processes == 1:
    return 1
  if coordinator_address is not None:
    # XLA's client aborts the process (a stack trace, no exception) when the
    # coordinator cannot be reached in time: find out here first.
    _check_coordinator(coordinator_address, process_id, timeout_s)
  # CPU devices of different processes reduce through gloo (TCP); the
  # setting does nothing on GPUs and TPUs.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=timeout_s,
                               heartbeat_timeout_seconds=timeout_s)
  except Exception as e:  # pylint: disable=broad-except
    where = coordinator_address or "the cluster's coordinator"
    raise StartFailed(f"cannot join the job at {where} within {timeout_s} s: "
                      f"{_first_line(e)}") from None
  return jax.process_count()


def _check_coordinator(address: str, process_id: int, timeout_s: float) -> None:
  """Process 0 must be able to listen on the coordinator's port; the others
  must reach it within ``timeout_s``.  Raises ``StartFailed``."""
  host, _, port = address.rpartition(":")
  host, port = host.strip("[]"), int(port)
  try:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
  except OSError as e:
    raise StartFailed(f"--coordinator_address {address!r}: cannot resolve {host!r} "
                      f"({e.strerror or e})") from None
  if process_id == 0:
    with socket.socket(family, socket.SOCK_STREAM) as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        s.bind(("", port))
      except OSError as e:
        raise StartFailed(f"--coordinator_address {address!r}: process 0 cannot listen on "
                          f"port {port} ({e.strerror or e})") from None
    return
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, port), timeout=2.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise StartFailed(f"cannot reach the coordinator {address} (process 0) within "
                          f"{timeout_s} s: {e.strerror or e}") from None
      time.sleep(0.5)


def runtime_output_to(path: str) -> None:
  """Sends what the runtime's C++ code writes to file descriptors 1 and 2
  (gloo's connections, the coordination service's warnings, and its stack
  trace when it ends a process whose peer is gone) to the file ``path``;
  Python's ``sys.stdout`` and ``sys.stderr``, which carry the program's own
  lines, stay where they were."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  sys.stdout.flush()
  sys.stderr.flush()
  sys.stdout = os.fdopen(os.dup(1), "w", buffering=1)
  sys.stderr = os.fdopen(os.dup(2), "w", buffering=1)
  log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(log, 1)
  os.dup2(log, 2)
  os.close(log)


def log_name() -> str:
  """The name of this process's runtime log, before the job is joined: its
  index from the flags' or the launcher's environment."""
  for name in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
    if os.environ.get(name, "").isdigit():
      return f"process_{os.environ[name]}.log"
  return f"process_{socket.gethostname()}_{os.getpid()}.log"


def _first_line(e: BaseException) -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return (lines[0] if lines else type(e).__name__)[:300]


def is_primary() -> bool:
  """True in the process that writes the run's files (process 0)."""
  return jax.process_index() == 0


def multi_process() -> bool:
  return jax.process_count() > 1


def any_process(flag: bool) -> bool:
  """True if ``flag`` is true in any process (every process must call it)."""
  if not multi_process():
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name``."""
  if multi_process():
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


# What XLA's runtime says when a reduction's peer or the coordination
# service is gone: gloo's closed connections, the coordination service's
# heartbeat and barrier errors.
_PEER_LOST = ("Gloo", "Connection closed by peer", "Connection reset by peer",
              "heartbeat", "CoordinationService", "coordination service", "Socket closed",
              "UNAVAILABLE")


def peer_lost(e: BaseException) -> str | None:
  """One line if ``e`` says another process of the job has stopped, else None."""
  if not multi_process():
    return None
  text = str(e)
  if not any(marker in text for marker in _PEER_LOST):
    return None
  return (f"another process of the job has stopped (seen by process {jax.process_index()} of "
          f"{jax.process_count()}: {_first_line(e)})")


def exit_now(status: int) -> None:
  """Ends the process without JAX's shutdown barrier, which waits for the
  processes that are gone and then aborts with a stack trace."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access
