"""Rebuilding the supernet without ops wiped on every edge."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_configs import crash_then_resume, wiping_config
from xnas_jax import rebuild, train
from xnas_jax.search_space import get_search_space
from xnas_jax.supernet import Supernet


def test_surviving_ops_keeps_ops_live_on_some_edge():
  net = Supernet(get_search_space("xnas"), 10, channels=4, num_cells=3)
  masks = {t: np.ones((14, 7), bool) for t in ("normal", "reduce")}
  masks["normal"][:, 0] = False           # max_pool wiped everywhere in normal cells
  masks["reduce"][:13, 4] = False         # sep_conv_5x5 still live on edge 13
  active = rebuild.surviving_ops(net, masks)
  assert "max_pool_3x3" not in active[0] and len(active[0]) == 6
  assert active[1] == net.built_ops("reduce")
  assert rebuild.dropped_ops(net, active) == {"normal": ["max_pool_3x3"], "reduce": []}


def test_carry_over_takes_leaves_at_target_paths_and_names_missing_ones():
  tree = {"a": {"x": jnp.arange(3), "y": jnp.ones(2)}, "b": (jnp.zeros(1), {"x": 5})}
  target = {"a": {"x": jax.ShapeDtypeStruct((3,), jnp.int32)}, "b": (None, {"x": 0})}
  out = rebuild.carry_over(tree, target)
  np.testing.assert_array_equal(out["a"]["x"], np.arange(3))
  assert out["b"][1]["x"] == 5 and set(out["a"]) == {"x"}
  with pytest.raises(KeyError, match=r"\['a'\]\['z'\]"):
    rebuild.carry_over(tree, {"a": {"z": 0}})


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rebuilt"))
  return workdir, train.train_and_evaluate(wiping_config(), workdir, progress=False)


def test_rebuild_drops_wiped_ops_and_matches_masking(rebuilt, tmp_path):
  workdir, result = rebuilt
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  dropped = lines[0]["rebuilt_without"]
  assert sum(map(len, dropped.values())) > 0
  assert lines[1]["built_ops_reduce"] == 7 - len(dropped["reduce"])
  assert lines[1]["compilations"] > 0 and "rebuilt_without" not in lines[1]
  params = result["state"]["params"]
  for op in dropped["reduce"]:  # cell 1 is the first reduction cell of 3
    assert op not in params["cell1"]["edges0"] and op not in params["cell1"]["edges1"]
  masked = train.train_and_evaluate(wiping_config(rebuild_wiped=False), str(tmp_path),
                                    progress=False)
  assert masked["genotype"] == result["genotype"]
  for t in ("normal", "reduce"):
    np.testing.assert_allclose(result["state"]["arch"][t], masked["state"]["arch"][t],
                               rtol=1e-5, atol=1e-6)
  # Every parameter the rebuilt network kept follows the same trajectory.
  kept = rebuild.carry_over(masked["state"]["params"], params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(kept)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_resume_after_rebuild_is_bit_identical(rebuilt, tmp_path, monkeypatch):
  _, full = rebuilt
  workdir = str(tmp_path)
  resumed = crash_then_resume(wiping_config(), workdir, monkeypatch)
  assert jax.tree.structure(resumed["state"]) == jax.tree.structure(full["state"])
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
