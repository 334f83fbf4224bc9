"""The benchmarks' timing protocol: one warm-up step, then the timed steps.

The warm-up step pays for compilation (JAX) or first allocations (PyTorch);
the peak-memory high-water mark restarts after it (``peak_memory``), so the
steady peak covers the timed steps only.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import peak_memory


def torch_sync(device: str) -> Callable[[Any], Any]:
  """What waits for a PyTorch step on ``device`` (its CUDA stream on a GPU)."""
  def sync(out):
    if device.startswith("cuda"):
      import torch  # pylint: disable=import-outside-toplevel
      torch.cuda.synchronize()
    return out
  return sync


def warm_then_time(step: Callable[[int], Any], steps: int,
                   sync: Callable[[Any], Any] = lambda out: out) -> tuple[float, float, Any]:
  """Runs ``step(0)``, then ``step(1) .. step(steps)``; ``sync`` waits for a
  step's output (``jax.block_until_ready``; dispatch runs ahead in between).
  Returns the warm-up's seconds, the mean seconds of a timed step and the
  last step's output."""
  t0 = time.perf_counter()
  sync(step(0))
  first = time.perf_counter() - t0
  peak_memory.reset_peak()
  t0 = time.perf_counter()
  out = None
  for i in range(1, steps + 1):
    out = step(i)
  sync(out)
  return first, (time.perf_counter() - t0) / steps, out


def median_call_time(fn: Callable[..., Any], args: tuple, repeats: int, calls: int = 3) -> float:
  """Seconds per call of a compiled ``fn(*args)``: the median (the upper one
  for an even ``repeats``) over ``repeats`` rounds of ``calls`` calls, each
  round waited for once at its end."""
  import jax  # pylint: disable=import-outside-toplevel  (the PyTorch benchmarks share this file)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / calls)
  return sorted(times)[len(times) // 2]
