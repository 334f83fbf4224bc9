"""Retraining a genotype end to end: metrics, test accuracy, exact resume, CLI."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from xnas_jax import checkpointing, config_defaults, evalnet, interrupts, retrain
from xnas_jax.genotype import Genotype
from tfevents import summaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENOTYPE = Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 0), ("max_pool_3x3", 2),
            ("skip_connect", 2), ("avg_pool_3x3", 3), ("sep_conv_5x5", 1), ("skip_connect", 4)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 0), ("skip_connect", 2),
            ("avg_pool_3x3", 1), ("sep_conv_3x3", 3), ("max_pool_3x3", 0), ("skip_connect", 4)),
    reduce_concat=(2, 3, 4, 5))


def tiny_eval_config(**overrides):
  c = config_defaults.eval_config()
  c.channels, c.num_cells, c.batch_size, c.epochs, c.limit = 4, 3, 32, 2, 256
  c.num_devices = 1
  c.figures = False
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("retrain"))
  return workdir, retrain.train_and_evaluate(tiny_eval_config(figures=True), GENOTYPE, workdir,
                                             progress=False)


def test_a_genotype_retrains_end_to_end(finished):
  workdir, result = finished
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["epoch"] for l in lines] == [1, 2]
  assert all(np.isfinite(l["train_loss"]) for l in lines)
  s = json.load(open(os.path.join(workdir, "summary.json")))
  assert 0.0 <= s["test_acc"] <= 1.0 and s["test_acc"] == result["summary"]["test_acc"]
  assert s["params_m"] * 1e6 == evalnet.parameter_count(result["state"]["params"])
  assert Genotype.from_dict(s["genotype"]) == GENOTYPE
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "2"
  events = summaries(os.path.join(workdir, "tensorboard"))
  for line in lines:
    assert events[("loss/train", "simple_value")][line["epoch"]] == pytest.approx(
        line["train_loss"], rel=1e-6)
  assert events[("acc/test", "simple_value")] == {2: pytest.approx(s["test_acc"])}
  assert os.path.getsize(os.path.join(workdir, "genotype.png")) > 10_000


def test_retraining_learns_digits(tmp_path):
  # Longer than the other tests' runs, still seconds: well above chance (0.1).
  c = tiny_eval_config(epochs=6, limit=0, batch_size=64)
  result = retrain.train_and_evaluate(c, GENOTYPE, str(tmp_path), progress=False)
  assert result["summary"]["test_acc"] > 0.5


def test_sigterm_stops_at_a_step_and_the_resume_is_bit_identical(finished, tmp_path, monkeypatch):
  """SIGTERM (a cluster's preemption) arrives while checkpoint 1 is written:
  the retraining stops at the next step boundary with the epoch the next run
  resumes from, leaves no temporary checkpoint, and the resume ends as the
  uninterrupted run ended, bit for bit."""
  _, full = finished
  original = checkpointing.save

  def preempted_after_first_checkpoint(mngr, step, *args, **kwargs):
    original(mngr, step, *args, **kwargs)
    if step == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(checkpointing, "save", preempted_after_first_checkpoint)
  with pytest.raises(interrupts.Stopped,
                     match="^stopped by SIGTERM; the next run in this workdir resumes from epoch 2$"):
    retrain.train_and_evaluate(tiny_eval_config(), GENOTYPE, str(tmp_path), progress=False)
  monkeypatch.setattr(checkpointing, "save", original)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
  resumed = retrain.train_and_evaluate(tiny_eval_config(), GENOTYPE, str(tmp_path),
                                       progress=False)
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert resumed["summary"]["test_acc"] == full["summary"]["test_acc"]


def test_a_checkpoint_of_another_genotype_is_refused(finished):
  workdir, _ = finished
  other = Genotype(GENOTYPE.reduce, (2, 3, 4, 5), GENOTYPE.normal, (2, 3, 4, 5))
  with pytest.raises(retrain.ConfigError, match="another genotype"):
    retrain.train_and_evaluate(tiny_eval_config(), other, workdir, progress=False)


@pytest.mark.parametrize("genotype_text,flag,message", [
    (None, "", "cannot read genotype"),
    ("{\"normal\": 3}", "", "not a genotype"),
    (json.dumps(dict(GENOTYPE.to_dict(), normal=[["conv_9x9", 0]] * 8)), "", "'conv_9x9'"),
    (GENOTYPE.to_json(), "--config.drop_path_prob=1.5", "drop_path_prob"),
    (GENOTYPE.to_json(), "--config.batch_size=100000", "batch_size 100000"),
])
def test_cli_bad_input_exits_2_with_one_line(genotype_text, flag, message, tmp_path):
  path = tmp_path / "genotype.json"
  if genotype_text is not None:
    path.write_text(genotype_text)
  cmd = [sys.executable, "-m", "xnas_jax.retrain_main", "--genotype", str(path),
         "--config", os.path.join(ROOT, "configs", "digits_eval.py"),
         "--workdir", str(tmp_path / "w")] + ([flag] if flag else [])
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert message in lines[0]
