"""Counts XLA backend compilations (and their seconds) through ``jax.monitoring``.

A persistent-cache hit does not count: only real XLA compilations fire the
backend-compile event.
"""
from __future__ import annotations

import threading

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch
_lock = threading.Lock()
_count = 0
_seconds = 0.0
_registered = []  # the listeners listen_once has registered


def _listener(event: str, duration: float, **kwargs) -> None:
  del kwargs
  global _count, _seconds
  if event == BACKEND_COMPILE_EVENT:
    with _lock:
      _count += 1
      _seconds += duration


def listen_once(listener) -> None:
  """Registers ``listener(event, duration, **kwargs)`` with
  ``jax.monitoring``'s event durations, once per process however often it is
  called (``install`` here, ``host_memory.install``)."""
  with _lock:
    if listener not in _registered:
      jax.monitoring.register_event_duration_secs_listener(listener)
      _registered.append(listener)


def install() -> None:
  """Registers the listener once per process."""
  listen_once(_listener)


def snapshot() -> tuple[int, float]:
  """``(compilations, seconds)`` since the process started counting."""
  with _lock:
    return _count, _seconds
