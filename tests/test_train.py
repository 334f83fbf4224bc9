"""End-to-end: a short search on digits, exact resume, failures, the CLI."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from xnas_jax import search_metrics
from xnas_jax import search_setup
from xnas_jax import search_steps
from xnas_jax import checkpointing, train
from search_configs import crash_then_resume, tiny_config
from tfevents import summaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  return workdir, train.train_and_evaluate(tiny_config(figures=True), workdir, progress=False)


def test_end_to_end_search_writes_metrics_checkpoints_and_genotype(finished):
  workdir, result = finished
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["epoch"] for l in lines] == [1, 2]
  for key in ("train_loss", "val_acc", "entropy_normal", "active_reduce", "wipeout_gap_normal"):
    assert np.isfinite(lines[-1][key])
  assert 0 <= lines[-1]["entropy_normal"] <= 1
  # The gap closes as t -> T (Alg. 1, line 11), and compilations are counted.
  assert lines[0]["wipeout_gap_normal"] > lines[-1]["wipeout_gap_normal"] == 0.0
  assert lines[-1]["compilations"] == 0  # nothing recompiles after the first epoch
  g = json.load(open(os.path.join(workdir, "genotype.json")))
  assert len(g["normal"]) == 8 and len(g["reduce"]) == 8
  ops = {op for op, _ in g["normal"] + g["reduce"]}
  assert "none" not in ops
  # The genotype never contains a wiped expert.
  search = search_setup.build_search(tiny_config())
  masks = search_setup.live_masks(search, result["state"])
  space = search.net.space
  for t in ("normal", "reduce"):
    for (op, src), k in zip(g[t], _edge_ids(space, g[t])):
      assert bool(masks[t][k, space.ops.index(op)])
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "2"


def test_a_search_leaves_tensorboard_events_and_pictures(finished):
  """The event file holds the metrics lines' numbers per epoch, and the
  mixture weights (which each line records) as a histogram and a picture."""
  workdir, _ = finished
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  events = summaries(os.path.join(workdir, "tensorboard"))
  for tag, key in (("loss/train", "train_loss"), ("acc/val", "val_acc"),
                   ("entropy/normal", "entropy_normal"), ("active/reduce", "active_reduce"),
                   ("wipeout_gap/normal", "wipeout_gap_normal"),
                   ("learning_rate/weights", "learning_rate")):
    got = events[(tag, "simple_value")]
    assert sorted(got) == [1, 2]
    for line in lines:
      assert got[line["epoch"]] == pytest.approx(line[key], rel=1e-6, abs=1e-7), tag
  for line in lines:
    u = np.asarray(line["mixture_normal"])
    assert u.shape == (14, 7)
    np.testing.assert_allclose(u.sum(-1), 1.0, atol=1e-5)  # over each edge's live experts
    assert events[("mixture/normal", "histo")][line["epoch"]].num == u.size
    image = events[("mixture/normal", "image")][line["epoch"]]
    assert (image.height, image.width) == (14 * 12, 7 * 12)
  # The weight rate of each epoch's last step, on DARTS's cosine schedule
  # from 0.025 to 0.001 over the search's T steps.
  total = lines[-1]["step"]
  for line in lines:
    t = line["step"] - 1
    want = 0.001 + 0.024 * 0.5 * (1 + np.cos(np.pi * t / total))
    assert line["learning_rate"] == pytest.approx(want, rel=1e-5)
  for name in ("genotype.png", "genotype.svg", "report.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 10_000, name
  svg = open(os.path.join(workdir, "genotype.svg")).read()
  g = json.load(open(os.path.join(workdir, "genotype.json")))
  for op, _ in g["normal"] + g["reduce"]:
    assert f">{op}<" in svg


def test_xnas_draw_redraws_a_report_and_a_genotype(finished, tmp_path):
  workdir, _ = finished
  out = tmp_path / "cells.svg"
  for args in (["--report", workdir], [os.path.join(workdir, "genotype.json"), "--out", str(out)]):
    proc = subprocess.run([sys.executable, "-m", "xnas_jax.draw_main", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
  assert os.path.getsize(out) > 10_000
  proc = subprocess.run([sys.executable, "-m", "xnas_jax.draw_main", "--report", str(tmp_path)],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1
  assert "is not a search workdir" in proc.stderr


def _edge_ids(space, cell):
  ids = []
  for j in range(4):
    for op, src in cell[2 * j:2 * j + 2]:
      ids.append(space.edges.index((src, j + 2)))
  return ids


def test_resume_is_bit_identical(finished, tmp_path, monkeypatch):
  _, full = finished
  workdir = str(tmp_path)
  resumed = crash_then_resume(tiny_config(), workdir, monkeypatch)
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert resumed["genotype"] == full["genotype"]
  assert len(open(os.path.join(workdir, "metrics.jsonl")).readlines()) == 2


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  original = search_steps.search_step
  calls = {"n": 0}

  def poisoned(*args, **kwargs):
    state, m = original(*args, **kwargs)
    calls["n"] += 1
    return state, (m.at[2].set(np.nan) if calls["n"] == 5 else m)

  monkeypatch.setattr(search_steps, "search_step", poisoned)
  with pytest.raises(train.SearchDiverged, match=r"non-finite val loss \(nan\) at step 4"):
    train.train_and_evaluate(tiny_config(), workdir, progress=False)
  search = search_setup.build_search(tiny_config())
  abstract = jax.eval_shape(lambda: search_setup.init_state(search, jax.random.key(0)))
  mngr = checkpointing.manager(os.path.join(workdir, "checkpoints"))
  restored = checkpointing.restore_newest(mngr, lambda meta: abstract).state
  mngr.close()
  assert int(restored["epoch"]) == 1 and int(restored["step"]) == 3


@pytest.mark.parametrize("flag,message", [
    ("--config.op_set=nope", "'nope'"),
    ("--config.dataset=imagenet9", "'imagenet9'"),
    ("--config.batch_size=0", "batch_size"),
    ("--config.batch_size=5000", "batch_size 5000"),
    ("--config.weight_optimizer.learning_rate=-1", "learning_rate"),
    ("--config.no_such_key=1", "no_such_key"),
])
def test_cli_bad_input_exits_2_with_one_line(flag, message, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "xnas_jax.main", "--config", os.path.join(ROOT, "configs", "digits.py"),
       "--workdir", str(tmp_path), flag],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert message in lines[0]


def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(finished, tmp_path, capfd):
  """The newest checkpoint's data truncated: the search restores epoch 1,
  redoes epoch 2 and ends where the uninterrupted run ended, bit for bit."""
  import shutil  # pylint: disable=import-outside-toplevel
  source, full = finished
  workdir = str(tmp_path / "w")
  shutil.copytree(source, workdir)
  data = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(workdir, "checkpoints", "2"))
          for f in fs if os.path.basename(r) == "d"]
  for path in data:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  resumed = train.train_and_evaluate(tiny_config(), workdir, progress=False)
  err = [l for l in capfd.readouterr().err.splitlines() if not l.startswith("WARNING:absl")]
  assert len(err) == 1 and re.fullmatch(  # found by its sums: one line, no orbax tracebacks
      r"warning: checkpoint 2 in \S+ is damaged \(packed/\S+ has \d+ bytes, \d+ were written\); "
      r"trying the one before", err[0]), err[:5]
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert [json.loads(l)["epoch"] for l in open(os.path.join(workdir, "metrics.jsonl"))] == [1, 2]
  assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "2"))


def test_resuming_with_another_config_is_refused(finished):
  workdir, _ = finished
  with pytest.raises(train.ConfigError, match="seed was 0, now 1"):
    train.train_and_evaluate(tiny_config(seed=1), workdir, progress=False)
  with pytest.raises(train.ConfigError, match="op_set was 'xnas', now 'darts'"):
    train.train_and_evaluate(tiny_config(op_set="darts"), workdir, progress=False)
  recorded = json.load(open(os.path.join(workdir, "config.json")))
  assert recorded["seed"] == 0 and recorded["op_set"] == "xnas"


def test_a_diverging_search_is_flagged(tmp_path):
  config = tiny_config()
  config.weight_optimizer.learning_rate = 1e4
  result = train.train_and_evaluate(config, str(tmp_path), progress=False)
  lines = [json.loads(l) for l in open(os.path.join(str(tmp_path), "metrics.jsonl"))]
  # lr = 1e4 diverges within the first epoch: its loss is far above ln 10.
  assert "a uniform guess's" in lines[0]["warning"]
  assert all("lower weight_optimizer.learning_rate" in l["warning"] for l in lines)
  assert result["summary"]["warning"] == lines[1]["warning"]


def test_divergence_rules():
  first = {"epoch": 1, "train_loss": 2.0, "val_acc": 0.3}
  assert search_metrics.divergence_warning(dict(first, epoch=2, train_loss=1.0, val_acc=0.5), first, 10) is None
  assert "30x epoch 1's" in search_metrics.divergence_warning(
      dict(first, epoch=2, train_loss=60.0, val_acc=0.5), first, 10)
  assert "at chance (1/10)" in search_metrics.divergence_warning(
      dict(first, epoch=3, train_loss=2.0, val_acc=0.11), first, 10)
  assert search_metrics.divergence_warning(first, first, 10) is None  # epoch 1 is never at chance yet
  assert "a uniform guess's (ln 10" in search_metrics.divergence_warning(
      dict(first, train_loss=25.0), dict(first, train_loss=25.0), 10)
