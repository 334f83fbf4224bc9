"""What the command-line programs share: one-line errors and the XLA cache."""
from __future__ import annotations

import os
import sys


def fail(program: str, message: str, status: int = 2) -> None:
  """Prints ``program: error: message`` to stderr and exits with ``status``."""
  print(f"{program}: error: {message}", file=sys.stderr)
  sys.exit(status)


def enable_compilation_cache() -> None:
  """JAX's persistent compilation cache, so re-runs skip XLA compilation."""
  import jax  # pylint: disable=import-outside-toplevel
  cache = os.environ.get("XNAS_JAX_CACHE",
                         os.path.join(os.path.expanduser("~"), ".cache", "xnas_jax", "xla"))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
