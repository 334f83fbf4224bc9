"""Checkpoints: asynchronous saves, metadata, and the metrics a resume keeps."""
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
  restored = checkpointing.restore_latest(mngr, _abstract(expected))
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), b)
  assert checkpointing.latest_meta(mngr) == {"active_ops": [["skip_connect"], []]}
  mngr.close()


def test_no_checkpoint_restores_none(tmp_path):
  mngr = checkpointing.manager(str(tmp_path))
  assert checkpointing.latest_meta(mngr) is None
  assert checkpointing.restore_latest(mngr, _abstract({"w": jnp.zeros(2)})) is None
  mngr.close()


def test_the_latest_of_several_checkpoints_is_restored(tmp_path):
  mngr = checkpointing.manager(str(tmp_path), max_to_keep=2)
  for step in (1, 2, 3):
    checkpointing.save(mngr, step, {"w": jnp.full(2, float(step))}, {"step": step})
  mngr.wait_until_finished()
  assert mngr.all_steps() == [2, 3]
  restored = checkpointing.restore_latest(mngr, _abstract({"w": jnp.zeros(2)}))
  np.testing.assert_array_equal(np.asarray(restored["w"]), [3.0, 3.0])
  assert checkpointing.latest_meta(mngr) == {"step": 3}
  mngr.close()


def test_truncate_metrics_keeps_the_epochs_of_the_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"epoch": e, "seed": s}) + "\n"
                          for e in (1, 2, 3) for s in (0, 1)))
  checkpointing.truncate_metrics(str(path), 2)
  kept = [json.loads(l) for l in path.read_text().splitlines()]
  assert [(r["epoch"], r["seed"]) for r in kept] == [(1, 0), (1, 1), (2, 0), (2, 1)]
  checkpointing.truncate_metrics(str(tmp_path / "absent.jsonl"), 0)  # no file: nothing to do
