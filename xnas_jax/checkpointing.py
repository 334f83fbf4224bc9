"""Orbax checkpoints of the search state (a plain pytree)."""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

PyTree = Any


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state: PyTree) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state))
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: PyTree) -> PyTree | None:
  """The latest checkpoint restored with the types of ``abstract_state``, or None."""
  step = mngr.latest_step()
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
