"""Orbax's calls with what they print on failure held back.

Orbax reads and writes a checkpoint's arrays asynchronously.  When one read
or write fails, the others complete into a closed event loop and each prints
a traceback: "Exception ignored in: <coroutine ...>", "Event loop is
closed", "Task exception was never retrieved", a different number every
time, some of them long after the call returned.  ``call`` runs an orbax
call with the process's stderr held (``stderr_held``), gives the text back
as it was when the call succeeds, drops it when the call fails, and then
keeps dropping those late reports of orbax's failed operations
(``_ignore_orbax_leftovers``), so the caller can report the failure in one
line.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Iterator, NamedTuple


class _Held:
  keep = True  # False: the text is dropped


@contextlib.contextmanager
def stderr_held(settle_s: float = 0.3, at_most_s: float = 5.0) -> Iterator[_Held]:
  """Sends what the process writes to its stderr (file descriptor 2, so C++
  threads' output too) to a temporary file inside the block.  At the end of
  the block the text is written to stderr as it came, unless the block set
  ``keep = False`` on what it was given or raised: then the text is dropped
  once it has stopped growing for ``settle_s`` (at most ``at_most_s``),
  since orbax's threads are still reporting into it."""
  sys.stderr.flush()
  saved, held = os.dup(2), _Held()
  with tempfile.TemporaryFile() as f:
    os.dup2(f.fileno(), 2)
    try:
      yield held
    except BaseException:
      held.keep = False
      raise
    finally:
      sys.stderr.flush()
      if held.keep:
        f.seek(0)
        if text := f.read():
          os.write(saved, text)
      else:
        deadline, size = time.monotonic() + at_most_s, -1
        while time.monotonic() < deadline and size != os.fstat(f.fileno()).st_size:
          size = os.fstat(f.fileno()).st_size
          time.sleep(settle_s)
      os.dup2(saved, 2)
      os.close(saved)


class Failure(NamedTuple):
  """What a call raised: the exception's type name and text."""
  kind: str
  text: str


def call(fn: Callable[[], Any], path: str) -> tuple[Any, Failure | None]:
  """``(fn(), None)``, or ``(None, what it raised)`` with what orbax printed
  meanwhile dropped (``path``: the checkpoint it reads or writes).  The exception itself is dropped and the garbage
  collected before stderr is given back: the coroutines its frames held
  report into the held text, not after it."""
  with stderr_held() as held:
    try:
      return fn(), None
    except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore, json, OS errors)
      failure = Failure(type(e).__name__, str(e) if not isinstance(e, OSError) or not e.strerror
                        else f"[Errno {e.errno}] {e.strerror}")
    _ignore_orbax_leftovers(path)
    gc.collect()
    held.keep = False
    return None, failure


def _ignore_orbax_leftovers(path: str) -> None:
  """After a failed read, orbax's other reads of the same checkpoint stay
  referenced by its closed event loop and are collected at a random later
  time, each reported as "Exception ignored in: <coroutine ...>" or, where
  tensorstore completes a read into the closed loop, "Event loop is closed"
  (both through ``sys.unraisablehook``), or as "Task (or Future) exception was never
  retrieved" (through the ``asyncio`` logger).  This installs, once, a hook
  and a log filter that drop exactly those reports: of orbax's coroutines,
  of closed event loops, and of futures whose error was raised in orbax or names ``path`` (the
  checkpoint that failed); every other report passes as before."""
  _FAILED_PATHS.add(os.path.abspath(path))
  previous = sys.unraisablehook
  if getattr(previous, "drops_orbax_coroutines", False):
    return

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    late = (isinstance(unraisable.exc_value, RuntimeError)  # a read done after its loop closed
            and str(unraisable.exc_value) == "Event loop is closed")
    if not late and (code is None or _ORBAX not in code.co_filename):
      previous(unraisable)

  hook.drops_orbax_coroutines = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(
      lambda record: not ("exception was never retrieved" in str(record.msg)
                          and (_from_orbax(record.exc_info)
                               or any(p in record.getMessage() for p in (_ORBAX, *_FAILED_PATHS)))))


_ORBAX = f"{os.sep}orbax{os.sep}"
_FAILED_PATHS: set[str] = set()


def _from_orbax(exc_info) -> bool:
  """Whether a logged exception was raised in orbax's code."""
  tb = exc_info[2] if isinstance(exc_info, tuple) and len(exc_info) == 3 else None
  return any(_ORBAX in frame.filename for frame in traceback.extract_tb(tb)) if tb else False


def os_reason(failure: Failure) -> str:
  """The cause of a failed write in a few words: the OS's message where the
  error carries one (tensorstore's ``[os_error_code=28]``, Python's
  ``[Errno 28]``), else its first line."""
  for marker, end in (("os_error_code=", "]"), ("[Errno ", "]")):
    if marker in failure.text:
      code = failure.text.split(marker)[1].split(end)[0].strip("'\"")
      if code.isdigit():
        return os.strerror(int(code))
  return f"{failure.kind}: {(failure.text.strip().splitlines() or [''])[0][:200]}"


