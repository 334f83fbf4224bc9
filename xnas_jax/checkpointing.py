"""Orbax checkpoints of the search state (a plain pytree) and its metadata.

Each checkpoint holds two items: ``state`` (the arrays) and ``meta`` (JSON:
what the state's *structure* depends on, e.g. the ops a rebuilt supernet
still builds), so a restore can first rebuild the matching abstract state.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any, Callable, NamedTuple

import orbax.checkpoint as ocp

PyTree = Any


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def latest_epoch(mngr: ocp.CheckpointManager) -> int:
  """The epoch of the newest finished checkpoint (0: none)."""
  return int(mngr.latest_step() or 0)


def save(mngr: ocp.CheckpointManager, step: int, state: PyTree,
         meta: dict[str, Any] | None = None) -> None:
  """Saves ``state`` and ``meta`` as ``step`` and waits until it is on disk.

  Synchronous on purpose: while a background write was in flight, a test run
  on 8 host devices and 2 cores once died in XLA:CPU's all-reduce rendezvous
  (40 s timeout) of the next step (the cause is not established).  A
  checkpoint only becomes the latest once it is complete, so a crash keeps
  the previous one.
  """
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta or {})))
  mngr.wait_until_finished()


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

  A checkpoint that fails to restore (a truncated or empty data or metadata
  file, a missing directory: what a full disk or an interrupted copy leaves)
  is moved out of the way, to ``<directory>/../damaged_checkpoints/<step>``,
  so that the resumed run can write that step again, and the next older
  one is tried.  Raises ``NoUsableCheckpoint`` (one line, naming the
  directory) when checkpoints exist and none restores.
  """
  damaged: list[str] = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      state = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state(meta or {}))))["state"]
    except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore, json, OS errors)
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      damaged.append(f"checkpoint {step} in {mngr.directory} cannot be restored "
                     f"({type(e).__name__}: {reason})")
      _set_aside(mngr, step)
      continue
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
