"""K seeds in one vmapped search equal K single searches."""
import json
import os

import jax
import numpy as np
import pytest

from search_configs import FEW_OPS, tiny_config
from tfevents import summaries
from xnas_jax import search_setup
from xnas_jax import train


def smooth_config(**overrides):
  """DARTS's Adam: no discrete wipeout decisions, so float differences between
  a vmapped and a plain convolution stay float-sized.  (With the tiny XNAS
  search, T is reached within the epoch and the final wipeout at t = T can
  flip on a near-tie, which makes two correct runs differ discretely.)"""
  c = tiny_config(op_set=FEW_OPS, epochs=1, **overrides)
  c.arch_optimizer.name = "darts_adam"
  return c


def test_seed_k_of_a_two_seed_run_equals_a_single_run_with_seed_k(tmp_path):
  many = train.train_and_evaluate(smooth_config(num_seeds=2, seed=3), str(tmp_path / "k"),
                                  progress=False)
  single = train.train_and_evaluate(smooth_config(seed=4), str(tmp_path / "1"), progress=False)
  assert jax.tree.leaves(many["state"]["arch"])[0].shape[0] == 2
  for t in ("normal", "reduce"):
    np.testing.assert_allclose(many["state"]["arch"][t][1], single["state"]["arch"][t],
                               rtol=1e-4, atol=1e-5)
  assert many["genotypes"][1] == single["genotype"]
  assert many["genotypes"][0] != many["genotypes"][1]  # independent searches
  lines = [json.loads(l) for l in open(tmp_path / "k" / "metrics.jsonl")]
  assert [l["seed"] for l in lines] == [3, 4]
  np.testing.assert_allclose(lines[1]["val_loss"], many["summaries"][1]["val_loss"])
  assert os.path.exists(tmp_path / "k" / "genotype_seed4.json")
  for seed, line in zip((3, 4), lines):  # one TensorBoard run per seed
    events = summaries(str(tmp_path / "k" / "tensorboard" / f"seed{seed}"))
    assert events[("loss/val", "simple_value")][1] == pytest.approx(line["val_loss"], rel=1e-6)


def test_xnas_seeds_keep_their_own_wipeout_masks(tmp_path):
  many = train.train_and_evaluate(tiny_config(op_set=FEW_OPS, num_seeds=2, epochs=1),
                                  str(tmp_path), progress=False)
  search = search_setup.build_search(tiny_config(op_set=FEW_OPS))
  masks = search_setup.live_masks(search, many["state"])
  assert masks["normal"].shape == (2, 14, len(search.net.space.ops))
  # The final wipeout (t = T) leaves exactly one expert per edge in each seed.
  np.testing.assert_array_equal(np.asarray(masks["normal"]).sum(-1), 1)
  assert not np.array_equal(masks["normal"][0], masks["normal"][1])
