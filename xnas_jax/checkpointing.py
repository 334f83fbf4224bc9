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
found before orbax reads it, the same way every time (a failing orbax read
prints a varying number of tracebacks, ``orbax_quiet``).  ``save`` refuses
a state larger than the free space before writing, and reports any write
that fails in one line (``CheckpointWriteFailed``).

In a job of several processes every process saves and restores (orbax
writes the arrays once), and process 0 alone writes the sums, the config
record and moves a damaged checkpoint aside, between barriers.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import sys
import zlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from xnas_jax import distributed
from xnas_jax import host_memory
from xnas_jax import orbax_quiet

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

  _, e = orbax_quiet.call(write, os.path.join(directory, str(step)))
  if e is not None:
    for partial in glob.glob(os.path.join(directory, f"{step}.orbax-checkpoint-tmp*")):
      shutil.rmtree(partial, ignore_errors=True)
    raise CheckpointWriteFailed(
        f"cannot write checkpoint {step} in {directory}: {orbax_quiet.os_reason(e)}{kept}") from None
  if distributed.is_primary():
    _record_sums(mngr, step)
  distributed.barrier(f"checkpoint_sums_{step}")  # a restore after this sees them
  host_memory.release()  # the write's freed C heap (tensorstore's buffers) back to the system


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

    restored, e = orbax_quiet.call(read, os.path.join(str(mngr.directory), str(step)))
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
  """Moves checkpoint ``step`` and its sums to ``damaged_checkpoints`` (process
  0; every process of a job has found it damaged and waits for the move)."""
  distributed.barrier(f"set_aside_{step}_checked")
  if distributed.is_primary():
    _move_aside(mngr, step)
  distributed.barrier(f"set_aside_{step}_moved")
  mngr.reload()


def _move_aside(mngr: ocp.CheckpointManager, step: int) -> None:
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
  if distributed.is_primary():
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
