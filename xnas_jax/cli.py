"""What the command-line programs share: flag parsing with one-line errors,
the XLA cache, the progress bar, joining a job of several processes."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, Sequence

import jax

from xnas_jax import distributed


def fail(program: str, message: str, status: int = 2) -> None:
  """Prints ``program: error: message`` to stderr and exits with ``status``."""
  print(f"{program}: error: {message}", file=sys.stderr)
  sys.exit(status)


def enable_compilation_cache() -> None:
  """JAX's persistent compilation cache, so re-runs skip XLA compilation."""
  cache = os.environ.get("XNAS_JAX_CACHE",
                         os.path.join(os.path.expanduser("~"), ".cache", "xnas_jax", "xla"))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def load_config(program: str, config_flag, flag_value: str | None):
  """The config of a ``DEFINE_config_file`` flag; a file that is missing or
  fails to load exits 2 with one line naming it."""
  try:
    config = config_flag.value
    if config is not None:
      config.keys()  # a file that failed to load gives an object that raises here
  except (OSError, SyntaxError, ImportError, AttributeError, NameError) as e:
    fail(program, f"cannot load --config {flag_value}: {_reason(e)}")
  if config is None:
    fail(program, "--config is required (for example --config configs/digits.py)")
  return config


def _reason(e: BaseException) -> str:
  """The most specific line of an exception chain (an ``[Errno ...]`` line if any)."""
  while e.__cause__ is not None or e.__context__ is not None:
    e = e.__cause__ or e.__context__
  lines = [l.strip() for l in str(e).splitlines() if l.strip()] or [type(e).__name__]
  errno = [l for l in lines if l.startswith("[Errno")]
  if isinstance(e, SyntaxError):
    return f"{type(e).__name__}: {e.msg} (line {e.lineno})"
  return errno[0] if errno else f"{type(e).__name__}: {lines[0]}"


def check_workdir(program: str, workdir: str | None) -> str:
  """``workdir`` if it is a directory or can be made one; else exits 2."""
  if not workdir:
    fail(program, "--workdir is required")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    fail(program, f"--workdir {workdir!r} exists and is not a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    fail(program, f"cannot create --workdir {workdir!r}: {e.strerror}")
  return workdir


def parse_flags(program: str, argv: Sequence[str]) -> None:
  """Parses absl flags; a bad flag or config value exits 2 with one line."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  try:
    flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    fail(program, str(e).splitlines()[0] if str(e) else type(e).__name__)
  except (OSError, SyntaxError, ImportError, NameError) as e:  # a config file that fails to load
    fail(program, f"cannot load a config file: {_reason(e)}")


def progress(it: Iterable, enabled: bool, desc: str) -> Iterable:
  """``it`` with a tqdm bar over epochs when enabled and tqdm is installed."""
  if not enabled:
    return it
  try:
    from tqdm import auto as tqdm  # pylint: disable=import-outside-toplevel
  except ImportError:
    return it
  return tqdm.tqdm(it, desc=desc, unit="epoch")


def process_flags() -> "ProcessFlags":
  """The flags that join a program to a job of several processes, defined
  once per interpreter (both CLIs' modules may be imported in one, as the
  documentation's build does)."""
  global _PROCESS_FLAGS  # pylint: disable=global-statement
  if _PROCESS_FLAGS is None:
    _PROCESS_FLAGS = ProcessFlags()
  return _PROCESS_FLAGS


class ProcessFlags:
  """The flags that join a program to a job of several processes
  (``xnas_jax.distributed``); use ``process_flags()``."""

  def __init__(self):
    from absl import flags  # pylint: disable=import-outside-toplevel
    self.coordinator_address = flags.DEFINE_string(
        "coordinator_address", None, "HOST:PORT of process 0, for a job of several processes.")
    self.num_processes = flags.DEFINE_integer("num_processes", None,
                                              "Processes in the job (with --coordinator_address).")
    self.process_id = flags.DEFINE_integer("process_id", None,
                                           "This process's index, 0..num_processes-1.")
    self.timeout = flags.DEFINE_integer(
        "distributed_timeout", 300, "Seconds to wait for the other processes to join, and "
        "without a heartbeat before a process counts as gone.")

  def start(self, program: str, workdir: str) -> int:
    """Joins the job the flags (or the cluster's environment) describe; a bad
    flag or a coordinator that cannot be reached exits 2 with one line.  In
    a job, the runtime's own output goes to ``workdir/logs/process_<i>.log``
    (``distributed.runtime_output_to``)."""
    address, n, i = (self.coordinator_address.value, self.num_processes.value,
                     self.process_id.value)
    problem = distributed.check_flags(address, n, i)
    if problem:
      fail(program, problem)
    if (n or distributed.cluster_size()) > 1:
      name = f"process_{i}.log" if i is not None else distributed.log_name()
      distributed.runtime_output_to(os.path.join(workdir, "logs", name))
    try:
      return distributed.start(address, n, i, self.timeout.value)
    except distributed.StartFailed as e:
      fail(program, str(e))
    return 1


_PROCESS_FLAGS: ProcessFlags | None = None


@contextlib.contextmanager
def peer_lost_ends(program: str) -> Iterator[None]:
  """In a job of several processes, an error inside the block that says
  another process stopped ends this one at once with one line (status 1);
  any other error passes through."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    line = distributed.peer_lost(e)
    if line:
      print(f"{program}: error: {line}", file=sys.stderr)
      distributed.exit_now(1)
    raise
