"""Orbax checkpoints of the search state (a plain pytree) and its metadata.

Each checkpoint holds two items: ``state`` (the arrays) and ``meta`` (JSON:
what the state's *structure* depends on, e.g. the ops a rebuilt supernet
still builds), so a restore can first rebuild the matching abstract state.
"""
from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp

PyTree = Any


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


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


def latest_meta(mngr: ocp.CheckpointManager) -> dict[str, Any] | None:
  """The metadata of the latest checkpoint, or None without one."""
  step = mngr.latest_step()
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: PyTree) -> PyTree | None:
  """The latest checkpoint restored with the types of ``abstract_state``, or None."""
  step = mngr.latest_step()
  if step is None:
    return None
  return mngr.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]


def truncate_metrics(path: str, keep_epochs: int) -> None:
  """Drops the lines of a ``metrics.jsonl`` whose epoch is later than the
  restored checkpoint's, so that a resumed run does not write them twice."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l)["epoch"] <= keep_epochs]
  with open(path, "w") as f:
    f.writelines(lines)
