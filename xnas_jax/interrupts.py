"""SIGTERM and SIGINT as a clean stop at a step boundary.

A cluster preempts a job with SIGTERM; a person stops one with Ctrl-C
(SIGINT).  Killed in the middle of an asynchronous orbax save, the process
would leave a temporary checkpoint behind.  ``catch()`` installs handlers
that only record the signal; the loop calls ``check()`` after every step and
between epochs, which raises ``Interrupted`` there.  The loop's ``finally``
then waits for the checkpoint being written and closes the event files, so
the workdir holds only finished checkpoints, and the run that follows
resumes from the last one: the interrupted epoch is run again from its
start, as the uninterrupted run ran it (data order and augmentation are
functions of the seed, the epoch and the step).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """A run stopped by a signal at a step boundary; ``signum`` names it."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


class Stopped(Exception):
  """A run stopped by a signal, reported in one line: ``signum``, and
  ``resume_epoch``, the epoch of the newest checkpoint, where the next run
  in the workdir starts (0: from the beginning)."""

  def __init__(self, signum: int, resume_epoch: int):
    super().__init__(f"stopped by {signal.Signals(signum).name}; the next run in this "
                     f"workdir resumes from epoch {resume_epoch + 1}")
    self.signum, self.resume_epoch = signum, resume_epoch


# A job of several processes asks all of them at every epoch's start and
# every AGREE_EVERY steps: each question waits for every process, which would
# stall the devices' queue if asked at every step.
AGREE_EVERY = 10


class Catcher:
  """The signal received (None: none yet).  With ``agree`` (a function that
  tells whether a flag is true in any process of a job), the processes stop
  together, at the same step: ``check`` asks them all, between steps only
  every ``AGREE_EVERY`` steps."""

  def __init__(self, agree: Callable[[bool], bool] | None = None):
    self.signum: int | None = None
    self.agree = agree
    self.steps = 0

  def check(self, step: bool = False) -> None:
    """Raises ``Interrupted`` once a signal has arrived (in any process, with
    ``agree``); ``step``: a check between steps."""
    if self.agree is None:
      if self.signum is not None:
        raise Interrupted(self.signum)
      return
    self.steps += step
    if step and self.steps % AGREE_EVERY:
      return
    if self.agree(self.signum is not None):
      raise Interrupted(self.signum or signal.SIGTERM)


@contextlib.contextmanager
def catch(agree: Callable[[bool], bool] | None = None) -> Iterator[Catcher]:
  """Records SIGTERM and SIGINT instead of dying of them, inside the block
  (in the main thread only: elsewhere Python cannot install handlers, and
  the block runs with the default behaviour)."""
  catcher = Catcher(agree)
  if threading.current_thread() is not threading.main_thread():
    yield catcher
    return

  def record(signum, frame):
    del frame
    catcher.signum = signum

  previous = {s: signal.signal(s, record) for s in SIGNALS}
  try:
    yield catcher
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
