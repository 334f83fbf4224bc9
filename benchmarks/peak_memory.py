"""A process's peak memory, whole and in the steady state (Linux).

``ru_maxrss`` is the process's peak resident set since it started: for JAX
it includes XLA's compilation, for PyTorch the first step's allocations.
``reset_peak()`` restarts the kernel's high-water mark (``VmHWM``) at the
current resident set (writing 5 to ``/proc/self/clear_refs``, Linux 4.0+), so
``steady_peak_bytes()`` after the timed steps is the most the process held
while it ran them: the memory a long search or retraining keeps.
"""
from __future__ import annotations

import resource


def process_peak_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
  """Restarts the high-water mark; False where the kernel does not allow it."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
    return True
  except OSError:
    return False


def steady_peak_bytes() -> int | None:
  """``VmHWM`` (the peak resident set since ``reset_peak``), or None."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None
