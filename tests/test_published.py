"""Published cells by name: their evaluation networks at the papers' CIFAR-10
size (C = 36, 20 cells) have the parameter counts the papers report."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from xnas_jax import evalnet
from xnas_jax import published


@pytest.mark.parametrize("name", sorted(published.GENOTYPES))
def test_published_cells_have_their_papers_parameter_counts(name):
  entry = published.GENOTYPES[name]
  assert published.get(name) == entry.genotype
  assert len(entry.genotype.normal) == len(entry.genotype.reduce) == 8
  net = evalnet.EvalNetwork(entry.genotype, 10, channels=36, num_cells=20, auxiliary=True)
  k = jax.random.key(0)
  shapes = jax.eval_shape(lambda: net.init({"params": k, "dropout": k, "noise": k},
                                           jnp.zeros((2, 32, 32, 3)), True))
  millions = evalnet.parameter_count(shapes["params"]) / 1e6
  if entry.params_m is None:  # the paper's count is not this cell's (see its source)
    assert 2.5 < millions < 4.5
  else:  # the papers round to 0.1M (DARTS-PT's release comments 3.05M for this cell)
    assert millions == pytest.approx(entry.params_m, abs=entry.tolerance_m), millions


def test_unknown_names_list_the_published_ones():
  with pytest.raises(ValueError, match="unknown genotype 'nope'; published ones: darts_v1"):
    published.get("nope")


def test_xnas_train_takes_a_published_name(tmp_path):
  """The name resolves before the run (which then stops at the bad batch size)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "xnas_jax.retrain_main", "--genotype", "darts_v2",
       "--config", os.path.join(root, "configs", "digits_eval.py"),
       "--config.batch_size=5000", "--workdir", str(tmp_path / "w")],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "batch_size 5000" in proc.stderr and "genotype" not in proc.stderr
