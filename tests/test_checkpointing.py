"""Checkpoints: saves, metadata, damaged checkpoints, the config a workdir
records, and the metrics a resume keeps."""
import os

import pytest
import json

import jax
import jax.numpy as jnp
import numpy as np

from xnas_jax import checkpointing


def _abstract(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def test_saved_buffers_may_be_donated_once_save_returns(tmp_path):
  # The loop donates the state to the next step right after `save` returns.
  mngr = checkpointing.manager(str(tmp_path))
  state = {"w": jnp.arange(200_000, dtype=jnp.float32), "m": {"mask": jnp.array([True, False])}}
  expected = jax.tree.map(np.asarray, state)
  checkpointing.save(mngr, 3, state, {"active_ops": [["skip_connect"], []]})
  jax.tree.map(lambda a: a.delete(), state)
  mngr.wait_until_finished()
  restored = checkpointing.restore_newest(mngr, lambda meta: _abstract(expected))
  for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), b)
  assert restored.meta == {"active_ops": [["skip_connect"], []]} and restored.step == 3
  mngr.close()


def test_no_checkpoint_restores_none(tmp_path):
  mngr = checkpointing.manager(str(tmp_path))
  restored = checkpointing.restore_newest(mngr, lambda meta: _abstract({"w": jnp.zeros(2)}))
  assert restored == (None, {}, None, [])
  mngr.close()


def test_the_latest_of_several_checkpoints_is_restored(tmp_path):
  mngr = checkpointing.manager(str(tmp_path), max_to_keep=2)
  for step in (1, 2, 3):
    checkpointing.save(mngr, step, {"w": jnp.full(2, float(step))}, {"step": step})
  mngr.wait_until_finished()
  assert mngr.all_steps() == [2, 3]
  restored = checkpointing.restore_newest(mngr, lambda meta: _abstract({"w": jnp.zeros(2)}))
  np.testing.assert_array_equal(np.asarray(restored.state["w"]), [3.0, 3.0])
  assert restored.meta == {"step": 3}
  mngr.close()


def test_truncate_metrics_keeps_the_epochs_of_the_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"epoch": e, "seed": s}) + "\n"
                          for e in (1, 2, 3) for s in (0, 1)))
  checkpointing.truncate_metrics(str(path), 2)
  kept = [json.loads(l) for l in path.read_text().splitlines()]
  assert [(r["epoch"], r["seed"]) for r in kept] == [(1, 0), (1, 1), (2, 0), (2, 1)]
  checkpointing.truncate_metrics(str(tmp_path / "absent.jsonl"), 0)  # no file: nothing to do


def _data_files(step_dir):
  return sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state"))
                for f in fs if os.path.basename(r) == "d")  # ocdbt's data files


def _truncate(path, size=None):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2 if size is None else size)


def _damage(step_dir, kind):
  if kind == "missing directory":
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(os.path.join(step_dir, "state"))
    return
  if kind == "truncated metadata":
    _truncate(os.path.join(step_dir, "state", "_METADATA"))
    return
  files = [f for f in _data_files(step_dir) if os.path.getsize(f) > 0]
  assert files, os.listdir(os.path.join(step_dir, "state"))
  for f in files:
    _truncate(f, None if kind == "truncated data file" else 0)


@pytest.mark.parametrize("kind", ["truncated data file", "truncated metadata",
                                  "missing directory", "empty file"])
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_restored(kind, tmp_path):
  mngr = checkpointing.manager(str(tmp_path / "checkpoints"), max_to_keep=2)
  weights = {step: jax.random.normal(jax.random.key(step), (1000,)) for step in (1, 2)}
  for step in (1, 2):
    checkpointing.save(mngr, step, {"w": weights[step]}, {"step": step})
  mngr.close()
  _damage(str(tmp_path / "checkpoints" / "2"), kind)
  mngr = checkpointing.manager(str(tmp_path / "checkpoints"), max_to_keep=2)
  restored = checkpointing.restore_newest(mngr, lambda meta: _abstract({"w": jnp.zeros(1000)}))
  assert restored.step == 1 and restored.meta == {"step": 1}
  np.testing.assert_array_equal(np.asarray(restored.state["w"]), np.asarray(weights[1]))
  assert len(restored.damaged) == 1 and restored.damaged[0].startswith("checkpoint 2 in ")
  assert os.path.isdir(tmp_path / "damaged_checkpoints" / "2")
  checkpointing.save(mngr, 2, {"w": jnp.full(1000, 5.0)}, {"step": 2})  # the step is free again
  mngr.close()


def test_no_restorable_checkpoint_is_one_error(tmp_path):
  mngr = checkpointing.manager(str(tmp_path / "checkpoints"))
  checkpointing.save(mngr, 1, {"w": jnp.ones(10)})
  mngr.close()
  _damage(str(tmp_path / "checkpoints" / "1"), "missing directory")
  mngr = checkpointing.manager(str(tmp_path / "checkpoints"))
  with pytest.raises(checkpointing.NoUsableCheckpoint, match="no checkpoint in .* can be restored"):
    checkpointing.restore_newest(mngr, lambda meta: _abstract({"w": jnp.zeros(10)}))
  mngr.close()


def test_the_workdir_config_refuses_another_run(tmp_path):
  config = {"seed": 0, "epochs": 5, "pt": {"tune_epochs": 5}, "ops": ("a", "b")}
  assert checkpointing.check_config(str(tmp_path), config, resuming=False) is None
  assert checkpointing.check_config(str(tmp_path), config, resuming=True) is None
  other = dict(config, seed=1)
  assert "seed was 0, now 1" in checkpointing.check_config(str(tmp_path), other, resuming=True)
  more = dict(config, epochs=6, pt={"tune_epochs": 1})
  assert "epochs was 5, now 6" in checkpointing.check_config(
      str(tmp_path), more, resuming=True, may_change=frozenset({"pt.tune_epochs"}))
  assert checkpointing.check_config(str(tmp_path), dict(config, pt={"tune_epochs": 1}),
                                    resuming=True, may_change=frozenset({"pt.tune_epochs"})) is None
