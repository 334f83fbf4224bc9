"""Test set-up: 8 host devices for the multi-device tests, float32, and one
compilation cache per xdist worker.

Two workers writing one persistent cache once aborted a worker inside JAX's
``compilation_cache.put_executable_and_time`` on a cold cache, and the run
hung.  Each worker (and each CLI subprocess and notebook kernel it starts,
through ``XNAS_JAX_CACHE``) therefore gets a directory of its own, under
``XNAS_JAX_TEST_CACHE`` (``.ci/run`` points it at a fresh directory, so CI
compiles as a new machine does) or ``~/.cache/xnas_jax/xla-tests``.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after XLA_FLAGS)

_ROOT = os.environ.get("XNAS_JAX_TEST_CACHE",
                       os.path.join(os.path.expanduser("~"), ".cache", "xnas_jax", "xla-tests"))
_CACHE = os.path.join(_ROOT, os.environ.get("PYTEST_XDIST_WORKER", "main"))
os.environ["XNAS_JAX_CACHE"] = _CACHE  # CLI subprocesses and notebook kernels
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


import pytest  # noqa: E402


@pytest.fixture
def no_persistent_cache():
  """Compiles without writing JAX's persistent cache.  The twice-differentiated
  programs of the second-order searches are compiled once per run, so the
  cache gains nothing there, and writing them crashed a worker inside
  ``compilation_cache.put_executable_and_time`` (SIGSEGV, then SIGABRT) in
  two full cold runs, while the same tests alone passed."""
  jax.config.update("jax_enable_compilation_cache", False)
  yield
  jax.config.update("jax_enable_compilation_cache", True)
