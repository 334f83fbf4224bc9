"""``host_memory``: the compiler's freed heap handed back after a compilation."""
import ctypes

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import host_memory


def _rss_bytes() -> int:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  raise AssertionError("no VmRSS")


@pytest.mark.skipif(host_memory._TRIM is None, reason="needs glibc's malloc_trim")
def test_release_returns_freed_heap_pages_to_the_system():
  """Small blocks freed with ``free`` stay in the process (glibc keeps them
  on its heap) until ``release`` trims it: the resident set falls by most of
  what was freed."""
  libc = ctypes.CDLL(None)
  libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
  blocks = []
  for _ in range(160_000):  # 160 MiB of 1 KiB blocks, below the mmap threshold
    p = libc.malloc(1024)
    libc.memset(p, 1, 1024)
    blocks.append(p)
  for p in blocks[:-1]:  # the last block pins the heap's top, which free() would trim
    libc.free(p)
  held = _rss_bytes()
  before = host_memory.trims()
  assert host_memory.release()
  assert host_memory.trims() == before + 1
  assert held - _rss_bytes() > 100 * 2**20
  libc.free(blocks[-1])


def test_the_listener_trims_only_after_long_backend_compilations():
  before = host_memory.trims()
  host_memory._listener(host_memory._EVENT, host_memory.MIN_SECONDS / 10)
  host_memory._listener("/jax/some/other/event", 10 * host_memory.MIN_SECONDS)
  assert host_memory.trims() == before
  host_memory._listener(host_memory._EVENT, host_memory.MIN_SECONDS)
  assert host_memory.trims() == before + (host_memory._TRIM is not None)


def test_install_trims_after_a_real_backend_compilation(no_persistent_cache, monkeypatch):
  """Through ``jax.monitoring``: a fresh program's compilation fires the
  event and the listener trims (the threshold lowered to 0 s for a small one)."""
  monkeypatch.setattr(host_memory, "MIN_SECONDS", 0.0)
  host_memory.install()
  host_memory.install()
  from jax._src import monitoring  # pylint: disable=import-outside-toplevel
  listeners = getattr(monitoring, "_event_duration_secs_listeners", None)  # private to JAX
  if listeners is not None:  # once per process: the second call adds no second listener
    assert listeners.count(host_memory._listener) == 1
  scale = float(np.random.default_rng().integers(1, 10**6))  # a program no cache holds
  x = jnp.ones(3)
  before = host_memory.trims()
  jax.jit(lambda x: jnp.sin(x) * scale)(x).block_until_ready()
  if host_memory._TRIM is None:
    assert host_memory.trims() == before
  else:
    assert host_memory.trims() > before
