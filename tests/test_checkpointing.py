"""Checkpoints: saves, metadata, damaged checkpoints, the config a workdir
records, and the metrics a resume keeps."""
import contextlib
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

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


def test_pack_and_unpack_are_inverse_bit_for_bit():
  state = {"w": jax.random.normal(jax.random.key(0), (3, 4)), "step": jnp.int32(7),
           "mask": jnp.array([[True, False]]), "key": jax.random.key_data(jax.random.key(1)),
           "empty": jnp.zeros((0, 2)), "nested": [jnp.float32(-0.0), jnp.arange(5, dtype=jnp.int32)]}
  buffers = checkpointing.pack(state)
  assert {k: b.shape for k, b in buffers.items()} == {"float32": (13,), "int32": (6,),
                                                     "bool": (2,), "uint32": (2,)}
  abstract = _abstract(state)
  assert {k: (s.shape, s.dtype) for k, s in checkpointing.packed_shapes(abstract).items()} == {
      k: (b.shape, b.dtype) for k, b in buffers.items()}
  back = checkpointing.unpack(buffers, abstract)
  assert jax.tree.structure(back) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()  # -0.0 stays -0.0
  with pytest.raises(ValueError, match="do not match"):
    checkpointing.unpack(buffers, _abstract(dict(state, w=jnp.zeros((3, 3)))))


def _resident_mib():
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


def test_a_checkpoint_holds_one_array_per_dtype_and_saves_keep_no_memory(tmp_path):
  """Orbax keeps part of every array's save in the process (about 1.8 kB an
  array a save, measured), and a supernet's state has thousands of arrays:
  the state is saved as one buffer per dtype.  Repeated saves of a
  2000-array state then leave the resident set where it was (it grew by
  ~4 MiB a save, 80 over these 20, with one array per leaf)."""
  state = {f"w{i}": jnp.full((50,), float(i)) for i in range(1900)}
  state.update({f"n{i}": jnp.arange(3, dtype=jnp.int32) for i in range(100)})
  mngr = checkpointing.manager(str(tmp_path), max_to_keep=1)
  checkpointing.save(mngr, 1, state)
  with open(tmp_path / "1" / "packed" / "_METADATA") as f:
    assert sorted(json.load(f)["tree_metadata"]) == ["('float32',)", "('int32',)"]
  for step in range(2, 6):  # warm-up: orbax's first saves allocate what it keeps
    checkpointing.save(mngr, step, state)
  before = _resident_mib()
  for step in range(6, 26):
    checkpointing.save(mngr, step, state)
  grown = _resident_mib() - before
  mngr.close()
  assert grown < 20, f"{grown:.1f} MiB over 20 saves"


def test_a_checkpoint_of_the_earlier_layout_restores(tmp_path):
  """Before packing, checkpoints held the arrays one by one as ``state``."""
  state = {"w": jnp.arange(6.0).reshape(2, 3), "n": jnp.int32(3)}
  mngr = checkpointing.manager(str(tmp_path))
  mngr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                       meta=ocp.args.JsonSave({"k": 1})))
  mngr.wait_until_finished()
  restored = checkpointing.restore_newest(mngr, lambda meta: _abstract(state))
  mngr.close()
  assert restored.step == 4 and restored.meta == {"k": 1} and restored.damaged == []
  for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


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
  return sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "packed"))
                for f in fs if os.path.basename(r) == "d")  # ocdbt's data files


def _truncate(path, size=None):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2 if size is None else size)


def _damage(step_dir, kind):
  if kind == "flipped byte":  # same size: only the CRC-32 tells
    path = max(_data_files(step_dir), key=os.path.getsize)
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2)
      byte = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte[0] ^ 0xFF]))
    return
  if kind == "missing directory":
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(os.path.join(step_dir, "packed"))
    return
  if kind == "truncated metadata":
    _truncate(os.path.join(step_dir, "packed", "_METADATA"))
    return
  files = [f for f in _data_files(step_dir) if os.path.getsize(f) > 0]
  assert files, os.listdir(os.path.join(step_dir, "packed"))
  for f in files:
    _truncate(f, None if kind == "truncated data file" else 0)


WHY = {"truncated data file": r"packed/(\S+/)?d/\w+ has \d+ bytes, \d+ were written",
       "truncated metadata": r"packed/_METADATA has \d+ bytes, \d+ were written",
       "missing directory": r"packed/\S+ is missing",
       "empty file": r"packed/(\S+/)?d/\w+ has 0 bytes, \d+ were written",
       "flipped byte": r"packed/(\S+/)?d/\w+ has changed since it was written \(CRC-32\)"}


@pytest.mark.parametrize("kind", list(WHY))
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_restored(kind, tmp_path, capfd):
  """Found by the recorded sums, before orbax reads it: one line naming the
  file, and nothing printed (orbax's failed reads print tracebacks)."""
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
  assert len(restored.damaged) == 1, restored.damaged
  assert re.fullmatch(rf"checkpoint 2 in \S+ is damaged \({WHY[kind]}\)", restored.damaged[0])
  assert os.path.isdir(tmp_path / "damaged_checkpoints" / "2")
  assert os.path.exists(tmp_path / "damaged_checkpoints" / "2.sums.json")
  checkpointing.save(mngr, 2, {"w": jnp.full(1000, 5.0)}, {"step": 2})  # the step is free again
  mngr.close()
  assert capfd.readouterr().err == ""


def test_a_damaged_checkpoint_without_sums_is_restored_quietly(tmp_path, capfd):
  """A checkpoint without recorded sums (an earlier version's) is found
  damaged by orbax's failing read.  Its other reads then report into a
  closed event loop at random times; none of that may reach stderr.
  Repeated because the reports are racy."""
  for attempt in range(4):
    directory = tmp_path / str(attempt) / "checkpoints"
    mngr = checkpointing.manager(str(directory), max_to_keep=2)
    tree = {f"w{i}": jax.random.normal(jax.random.key(i), (64, 64)) for i in range(24)}
    for step in (1, 2):
      checkpointing.save(mngr, step, tree)
    mngr.close()
    shutil.rmtree(tmp_path / str(attempt) / "checkpoint_sums")
    _damage(str(directory / "2"), "truncated data file")
    mngr = checkpointing.manager(str(directory), max_to_keep=2)
    restored = checkpointing.restore_newest(mngr, lambda meta: _abstract(tree))
    mngr.close()
    assert restored.step == 1 and "cannot be restored" in restored.damaged[0]
    gc.collect()
    time.sleep(0.2)
    assert capfd.readouterr().err == "", f"attempt {attempt}"


@contextlib.contextmanager
def _small_disk(path, size):
  """A tmpfs of ``size`` mounted at ``path`` (the test is skipped where
  that needs privileges the test does not have)."""
  os.makedirs(path)
  if os.geteuid() != 0:
    pytest.skip("mounting a small tmpfs needs root; the injected write error covers the rest")
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True, text=True, check=False)
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_one_error_and_keeps_the_checkpoint_before(tmp_path, capfd):
  """A state larger than the free space is refused before orbax writes; a
  write that runs out of space on the way (the free space less than the
  files, more than the arrays) is one error too.  Either way checkpoint 1
  restores and no partial checkpoint remains."""
  with _small_disk(tmp_path / "disk", "256k") as disk:
    directory = str(disk / "checkpoints")
    mngr = checkpointing.manager(directory)
    small = {"w": jnp.arange(1000, dtype=jnp.float32)}
    checkpointing.save(mngr, 1, small, {"step": 1})
    big = {"w": jax.random.normal(jax.random.key(0), (100_000,))}  # 400 kB > 256 kB
    with pytest.raises(checkpointing.CheckpointWriteFailed,
                       match=(rf"^cannot write checkpoint 2 in {directory}: No space left on device "
                              r"\(\d+ bytes free, the state alone has 400000\); checkpoint 1 is kept$")):
      checkpointing.save(mngr, 2, big)
    half = {"w": jax.random.normal(jax.random.key(0), (40_000,))}  # 160 kB of noise
    with open(disk / "filler", "wb") as f:  # leaves 8 kB more than the arrays
      f.write(b"\0" * (shutil.disk_usage(disk).free - 160_000 - 8192))
    with pytest.raises(checkpointing.CheckpointWriteFailed,
                       match=rf"^cannot write checkpoint 2 in {directory}: No space left on device; "
                             "checkpoint 1 is kept$"):
      checkpointing.save(mngr, 2, half)
    mngr.close()
    os.remove(disk / "filler")
    assert sorted(os.listdir(directory)) == ["1"]
    mngr = checkpointing.manager(directory)
    restored = checkpointing.restore_newest(mngr, lambda meta: _abstract(small))
    mngr.close()
    assert restored.step == 1 and restored.damaged == []
    np.testing.assert_array_equal(np.asarray(restored.state["w"]), np.arange(1000))
  assert capfd.readouterr().err == ""


def test_a_failing_write_is_one_error(tmp_path):
  """A write error injected through the file-size limit (``RLIMIT_FSIZE``:
  the OS refuses every byte past 64 kB, as a full disk refuses them), in a
  process of its own: one line, nothing else on stderr, no partial checkpoint."""
  script = f"""
import resource, jax, jax.numpy as jnp
from xnas_jax import checkpointing
mngr = checkpointing.manager({str(tmp_path / "checkpoints")!r})
checkpointing.save(mngr, 1, {{"w": jnp.arange(100, dtype=jnp.float32)}})
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
  checkpointing.save(mngr, 2, {{"w": jax.random.normal(jax.random.key(0), (100_000,))}})
except checkpointing.CheckpointWriteFailed as e:
  print(e)
"""
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert done.stdout.strip() == (f"cannot write checkpoint 2 in {tmp_path / 'checkpoints'}: "
                                 "File too large; checkpoint 1 is kept"), done
  assert [l for l in done.stderr.splitlines() if not l.startswith("WARNING:absl")] == [], done.stderr
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]


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
