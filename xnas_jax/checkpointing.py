"""Orbax checkpoints of the search state (a plain pytree) and its metadata.

Each checkpoint holds two items: ``packed`` (the state's arrays, packed into
one flat buffer per dtype, ``pack``) and ``meta`` (JSON: what the state's
*structure* depends on, e.g. the ops a rebuilt supernet still builds), so a
restore can first rebuild the matching abstract state and unpack into it.
Orbax's cost of a save grows with the number of arrays (a supernet's state
has thousands), and part of it stays in the process: saving a few buffers
keeps a long search's memory flat (``benchmarks/memory_soak.py``).
Checkpoints of earlier versions hold the arrays one by one under ``state``
and still restore.

Beside ``<dir>`` (the checkpoints), ``<dir>/../checkpoint_sums/<step>.json``
records the size and CRC-32 of every file of a finished checkpoint
(``file_sums``).  A restore checks them first: a damaged checkpoint is then
found before orbax reads it.  Orbax's reads are asynchronous, and when one
of them fails, the others complete into a closed event loop and print a
traceback each, a different number every time.  Failed writes (a full disk)
do the same, so ``save`` first refuses a state larger than the free space,
and both calls hold the process's stderr (``stderr_held``) while orbax runs,
giving it back as it was when they succeed and dropping it when they fail:
the failure is then reported in one line.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import zlib
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from xnas_jax import host_memory

PyTree = Any


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def latest_epoch(mngr: ocp.CheckpointManager) -> int:
  """The epoch of the newest finished checkpoint (0: none)."""
  return int(mngr.latest_step() or 0)


class CheckpointWriteFailed(RuntimeError):
  """A checkpoint could not be written (one line: the directory and the cause).
  The checkpoints written before it are kept and the partial one is removed."""


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


def _quietly(fn: Callable[[], Any], path: str) -> tuple[Any, Failure | None]:
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


def _sums_path(mngr: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(os.path.dirname(str(mngr.directory)), "checkpoint_sums", f"{step}.json")


def file_sums(step_dir: str) -> dict[str, list[int]]:
  """``{path relative to step_dir: [size in bytes, CRC-32]}`` of every file."""
  return {os.path.relpath(os.path.join(root, name), step_dir):
          [os.path.getsize(os.path.join(root, name)), _crc32(os.path.join(root, name))]
          for root, _, files in os.walk(step_dir) for name in sorted(files)}


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


def check_sums(mngr: ocp.CheckpointManager, step: int) -> str | None:
  """Why checkpoint ``step``'s files differ from what was written (the first
  file that does), or None: they match, or no sums were recorded (a
  checkpoint of an earlier version, or one whose run stopped right after
  orbax finished it)."""
  path = _sums_path(mngr, step)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    written = json.load(f)
  step_dir = os.path.join(str(mngr.directory), str(step))
  for name, (size, crc) in sorted(written.items()):
    full = os.path.join(step_dir, name)
    if not os.path.exists(full):
      return f"{name} is missing"
    if os.path.getsize(full) != size:
      return f"{name} has {os.path.getsize(full)} bytes, {size} were written"
    if _crc32(full) != crc:
      return f"{name} has changed since it was written (CRC-32)"
  return None


def _nbytes(tree: PyTree) -> int:
  return sum(int(getattr(a, "nbytes", 0)) for a in jax.tree.leaves(tree))


PACKED, UNPACKED = "packed", "state"  # the item names of the two layouts


def pack(state: PyTree) -> dict[str, np.ndarray]:
  """The leaves of ``state``, flattened and concatenated in tree order into
  one buffer per dtype (``{dtype name: [n]}``), on the host."""
  groups: dict[str, list[np.ndarray]] = {}
  for leaf in jax.tree.leaves(jax.device_get(state)):
    leaf = np.asarray(leaf)
    groups.setdefault(leaf.dtype.name, []).append(leaf.ravel())
  return {name: np.concatenate(parts) for name, parts in groups.items()}


def packed_shapes(abstract_state: PyTree) -> dict[str, jax.ShapeDtypeStruct]:
  """The buffers ``pack`` makes of a state shaped as ``abstract_state``."""
  sizes: dict[str, tuple[int, Any]] = {}
  for leaf in jax.tree.leaves(abstract_state):
    name = np.dtype(leaf.dtype).name
    sizes[name] = (sizes.get(name, (0, None))[0] + int(np.prod(leaf.shape)), leaf.dtype)
  return {name: jax.ShapeDtypeStruct((n,), dtype) for name, (n, dtype) in sizes.items()}


def unpack(buffers: dict[str, Any], abstract_state: PyTree) -> PyTree:
  """The inverse of ``pack``: the state shaped as ``abstract_state``."""
  leaves, treedef = jax.tree.flatten(abstract_state)
  buffers = {name: np.asarray(b) for name, b in buffers.items()}
  offsets = dict.fromkeys(buffers, 0)
  out = []
  for leaf in leaves:
    name, n = np.dtype(leaf.dtype).name, int(np.prod(leaf.shape))
    out.append(jnp.asarray(buffers[name][offsets[name]:offsets[name] + n].reshape(leaf.shape)))
    offsets[name] += n
  if any(offsets[name] != buffers[name].size for name in buffers):
    raise ValueError("the packed buffers do not match the state's structure "
                     f"({ {k: int(b.size) for k, b in buffers.items()} } for {offsets})")
  return treedef.unflatten(out)


def save(mngr: ocp.CheckpointManager, step: int, state: PyTree,
         meta: dict[str, Any] | None = None) -> None:
  """Saves ``state`` and ``meta`` as ``step``, waits until it is on disk and
  records its files' sums.

  Synchronous on purpose: while a background write was in flight, a test run
  on 8 host devices and 2 cores once died in XLA:CPU's all-reduce rendezvous
  (40 s timeout) of the next step (the cause is not established).  A
  checkpoint only becomes the latest once it is complete, so a crash keeps
  the previous one.  Raises ``CheckpointWriteFailed`` when the free space is
  less than the state's bytes (before writing anything) or the write fails.
  """
  directory = str(mngr.directory)
  kept = (f"; checkpoint {mngr.latest_step()} is kept" if mngr.latest_step() is not None
          else "")
  free, needed = shutil.disk_usage(directory).free, _nbytes(state)
  if free < needed:
    raise CheckpointWriteFailed(
        f"cannot write checkpoint {step} in {directory}: {os.strerror(errno.ENOSPC)} "
        f"({free} bytes free, the state alone has {needed}){kept}")
  def write():
    mngr.save(step, args=ocp.args.Composite(**{PACKED: ocp.args.StandardSave(pack(state))},
                                            meta=ocp.args.JsonSave(meta or {})))
    mngr.wait_until_finished()

  _, e = _quietly(write, os.path.join(directory, str(step)))
  if e is not None:
    for partial in glob.glob(os.path.join(directory, f"{step}.orbax-checkpoint-tmp*")):
      shutil.rmtree(partial, ignore_errors=True)
    raise CheckpointWriteFailed(
        f"cannot write checkpoint {step} in {directory}: {_os_reason(e)}{kept}") from None
  _record_sums(mngr, step)
  host_memory.release()  # the write's freed C heap (tensorstore's buffers) back to the system


def _os_reason(failure: Failure) -> str:
  """The cause of a failed write in a few words: the OS's message where the
  error carries one (tensorstore's ``[os_error_code=28]``, Python's
  ``[Errno 28]``), else its first line."""
  for marker, end in (("os_error_code=", "]"), ("[Errno ", "]")):
    if marker in failure.text:
      code = failure.text.split(marker)[1].split(end)[0].strip("'\"")
      if code.isdigit():
        return os.strerror(int(code))
  return f"{failure.kind}: {(failure.text.strip().splitlines() or [''])[0][:200]}"


def _record_sums(mngr: ocp.CheckpointManager, step: int) -> None:
  """Writes ``step``'s sums (atomically) and drops those of the checkpoints
  orbax has deleted."""
  path = _sums_path(mngr, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:
    with open(path + ".tmp", "w") as f:
      json.dump(file_sums(os.path.join(str(mngr.directory), str(step))), f)
    os.replace(path + ".tmp", path)
  except OSError as e:
    if os.path.exists(path + ".tmp"):
      os.remove(path + ".tmp")
    raise CheckpointWriteFailed(
        f"checkpoint {step} in {mngr.directory} is written, but its sums cannot be "
        f"({os.path.dirname(path)}: {e.strerror})") from None
  kept = {str(s) for s in mngr.all_steps()}
  for old in os.listdir(os.path.dirname(path)):
    if old.endswith(".json") and old[:-len(".json")] not in kept:
      os.remove(os.path.join(os.path.dirname(path), old))


class NoUsableCheckpoint(RuntimeError):
  """Checkpoints exist but none of them can be restored."""


class Restored(NamedTuple):
  state: PyTree | None  # None: no checkpoint (a fresh run)
  meta: dict[str, Any]
  step: int | None
  damaged: list[str]  # one line per checkpoint that could not be restored


def restore_newest(mngr: ocp.CheckpointManager,
                   abstract_state: Callable[[dict[str, Any]], PyTree]) -> Restored:
  """The newest checkpoint that restores, with the types of ``abstract_state(meta)``.

  A checkpoint whose files differ from their recorded sums (``check_sums``)
  or that fails to restore (a truncated or empty data or metadata file, a
  missing directory: what a full disk or an interrupted copy leaves) is
  moved out of the way, to ``<directory>/../damaged_checkpoints/<step>``,
  so that the resumed run can write that step again, and the next older
  one is tried.  Raises ``NoUsableCheckpoint`` (one line, naming the
  directory) when checkpoints exist and none restores.
  """
  damaged: list[str] = []
  for step in sorted(mngr.all_steps(), reverse=True):
    differs = check_sums(mngr, step)
    if differs:
      damaged.append(f"checkpoint {step} in {mngr.directory} is damaged ({differs})")
      _set_aside(mngr, step)
      continue
    def read(step=step):
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      abstract = abstract_state(meta or {})
      if not os.path.isdir(os.path.join(str(mngr.directory), str(step), PACKED)):
        return meta, mngr.restore(step, args=ocp.args.Composite(**{
            UNPACKED: ocp.args.StandardRestore(abstract)}))[UNPACKED]
      buffers = mngr.restore(step, args=ocp.args.Composite(**{
          PACKED: ocp.args.StandardRestore(packed_shapes(abstract))}))[PACKED]
      return meta, unpack(buffers, abstract)

    restored, e = _quietly(read, os.path.join(str(mngr.directory), str(step)))
    if e is not None:
      reason = (e.text.strip().splitlines() or [e.kind])[0].split(" See full TensorStore")[0][:200]
      damaged.append(f"checkpoint {step} in {mngr.directory} cannot be restored "
                     f"({e.kind}: {reason})")
      _set_aside(mngr, step)
      continue
    meta, state = restored
    return Restored(state, meta or {}, step, damaged)
  if damaged:
    raise NoUsableCheckpoint(f"no checkpoint in {mngr.directory} can be restored "
                             f"({len(damaged)} damaged, moved to "
                             f"{os.path.join(os.path.dirname(str(mngr.directory)), 'damaged_checkpoints')})")
  return Restored(None, {}, None, damaged)


def _set_aside(mngr: ocp.CheckpointManager, step: int) -> None:
  directory = str(mngr.directory)
  aside = os.path.join(os.path.dirname(directory), "damaged_checkpoints")
  os.makedirs(aside, exist_ok=True)
  target = os.path.join(aside, str(step))
  if os.path.exists(target):
    shutil.rmtree(target)
  source = os.path.join(directory, str(step))
  if os.path.exists(source):
    shutil.move(source, target)
  sums = _sums_path(mngr, step)
  if os.path.exists(sums):
    shutil.move(sums, os.path.join(aside, f"{step}.sums.json"))
  mngr.reload()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def recorded_config(workdir: str) -> dict[str, Any]:
  """The config recorded in ``workdir/config.json`` ({} without one)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def check_config(workdir: str, config: dict[str, Any], resuming: bool,
                 may_change: frozenset[str] = frozenset()) -> str | None:
  """Records the config that made a workdir's checkpoints, or checks a resume against it.

  A fresh run writes ``workdir/config.json``.  A resume compares the config
  with it and returns a one-line reason naming the first key that differs
  (other than the keys in ``may_change``), or None when the resume is the
  same run.  A workdir from before this record is accepted and recorded.
  """
  path = os.path.join(workdir, "config.json")
  config = json.loads(json.dumps(config))  # tuples -> lists, as read back
  if resuming and os.path.exists(path):
    recorded = _flatten(recorded_config(workdir))
    now = _flatten(config)
    for key in sorted(set(recorded) | set(now)):
      if key in may_change:
        continue
      if recorded.get(key, "<absent>") != now.get(key, "<absent>"):
        return (f"{workdir} holds the checkpoints of another run: {key} was "
                f"{recorded.get(key, '<absent>')!r}, now {now.get(key, '<absent>')!r} "
                "(use a new --workdir)")
    return None
  with open(path, "w") as f:
    json.dump(config, f, indent=1, sort_keys=True)
  return None


class ResumeRefused(ValueError):
  """A workdir whose checkpoints belong to another run, or none of which restores."""


def resume(mngr: ocp.CheckpointManager, workdir: str, config: dict[str, Any],
           may_change: frozenset[str],
           abstract_state: Callable[[dict[str, Any]], PyTree]) -> Restored:
  """What a program does before it (re)starts in ``workdir``: refuses another
  run's checkpoints before restoring anything (a restore under the wrong
  structure would look like damage; ``check_config``), then restores the
  newest checkpoint that restores (``restore_newest``), warning on stderr
  about each damaged one.  Raises ``ResumeRefused`` (one line) and closes
  the manager when the run cannot go on."""
  mismatch = check_config(workdir, config, bool(mngr.all_steps()), may_change)
  if mismatch:
    mngr.close()
    raise ResumeRefused(mismatch)
  try:
    restored = restore_newest(mngr, abstract_state)
  except NoUsableCheckpoint as e:
    mngr.close()
    raise ResumeRefused(str(e)) from None
  for line in restored.damaged:
    print(f"warning: {line}; trying the one before", file=sys.stderr)
  return restored


def append_metrics(path: str, rows: list[dict[str, Any]]) -> None:
  """Appends one JSON line per row to the metrics file ``path``."""
  with open(path, "a") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def truncate_metrics(path: str, keep_epochs: int) -> None:
  """Drops the lines of a ``metrics.jsonl`` whose epoch is later than the
  restored checkpoint's, so that a resumed run does not write them twice."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l)["epoch"] <= keep_epochs]
  with open(path, "w") as f:
    f.writelines(lines)
