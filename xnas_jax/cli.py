"""What the command-line programs share: flag parsing with one-line errors,
the XLA cache, the progress bar."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Sequence


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


def parse_flags(program: str, argv: Sequence[str]) -> None:
  """Parses absl flags; a bad flag or config value exits 2 with one line."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  try:
    flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    fail(program, str(e).splitlines()[0] if str(e) else type(e).__name__)


def progress(it: Iterable, enabled: bool, desc: str) -> Iterable:
  """``it`` with a tqdm bar over epochs when enabled and tqdm is installed."""
  if not enabled:
    return it
  try:
    from tqdm import auto as tqdm  # pylint: disable=import-outside-toplevel
  except ImportError:
    return it
  return tqdm.tqdm(it, desc=desc, unit="epoch")
