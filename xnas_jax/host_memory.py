"""Gives the heap memory that XLA's compiler freed back to the system.

XLA:CPU's compilation of a step program allocates hundreds of MiB on the C
heap and frees it when done. glibc keeps the freed pages in the process, so
the compiled program's first run, which maps its own buffers, stacks them on
top: the process's peak resident set is then the compiler's heap plus the
program's (``benchmarks/evalnet_step.py --keep-heap`` shows the difference).

``install()`` adds a listener to JAX's backend-compile event
(``jax.monitoring``, as ``compile_counter`` does). After every compilation
that took at least ``MIN_SECONDS``, it calls glibc's ``malloc_trim(0)``. That
runs between the compilation and the program's first run, and takes far less
time than the compilation it follows. Where there is no ``malloc_trim``
(macOS, musl), it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

from xnas_jax import compile_counter
from xnas_jax.compile_counter import BACKEND_COMPILE_EVENT as _EVENT

MIN_SECONDS = 1.0  # the step programs; not the many small programs of eager code
_lock = threading.Lock()
_trims = 0


def _malloc_trim():
  """glibc's ``malloc_trim``, or None."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    trim = libc.malloc_trim
  except (OSError, AttributeError):
    return None
  trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
  return trim


_TRIM = _malloc_trim()


def release() -> bool:
  """Returns the heap's free pages to the system now; False without glibc."""
  global _trims
  if _TRIM is None:
    return False
  _TRIM(0)
  with _lock:
    _trims += 1
  return True


def _listener(event: str, duration: float, **kwargs) -> None:
  del kwargs
  if event == _EVENT and duration >= MIN_SECONDS:
    release()


def install() -> None:
  """Registers the listener once per process."""
  compile_counter.listen_once(_listener)


def trims() -> int:
  """How many times ``release`` has run in this process."""
  with _lock:
    return _trims
