"""DrNAS's progressive search: pruning by hand, widening against net2wider's
definition, and a search across the stage switch that resumes bit-identically."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_configs import crash_then_resume, tiny_config
from xnas_jax import config_checks
from xnas_jax import progressive
from xnas_jax import search_setup
from xnas_jax import train
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's


def test_prune_keeps_the_strongest_live_experts():
  u = np.array([[0.1, 0.4, 0.2, 0.3], [0.25, 0.25, 0.4, 0.1], [0.7, 0.1, 0.1, 0.1]])
  masks = np.ones((3, 4), bool)
  masks[2, 0] = False  # a wiped expert is never kept, however large its weight
  kept = progressive.prune({t: u for t in CELL_TYPES}, {t: masks for t in CELL_TYPES}, 2,
                           CELL_TYPES)
  assert kept[0] == kept[1] == (
      (False, True, False, True),   # 0.4, 0.3
      (True, False, True, False),   # 0.4, then the tie 0.25 / 0.25 to the lower index
      (False, True, True, False))   # 0.7 is wiped: the first two of the tied 0.1s


def test_widen_copies_channels_as_net2wider():
  """New channels are copies of old ones, the same ones along every axis of
  an expert's leaves, wherever its subtree sits (parameters, momentum)."""
  old = {"cell0": {"edges0": {"sep": {"k": jnp.arange(2 * 3 * 3, dtype=jnp.float32)
                                                .reshape(2, 1, 1, 3, 3),
                                      "mean": jnp.arange(2 * 3, dtype=jnp.float32).reshape(2, 3)}}}}
  target = {"cell0": {"edges0": {"sep": {"k": jax.ShapeDtypeStruct((2, 1, 1, 5, 5), jnp.float32),
                                         "mean": jax.ShapeDtypeStruct((2, 5), jnp.float32)}}}}
  key = jax.random.key(3)
  new = progressive.widen(old, target, key)
  k, mean = np.asarray(new["cell0"]["edges0"]["sep"]["k"]), np.asarray(
      new["cell0"]["edges0"]["sep"]["mean"])
  old_k, old_mean = np.asarray(old["cell0"]["edges0"]["sep"]["k"]), np.asarray(
      old["cell0"]["edges0"]["sep"]["mean"])
  np.testing.assert_array_equal(k[:, :, :, :3, :3], old_k)
  np.testing.assert_array_equal(mean[:, :3], old_mean)
  # Which old channel each new one copies, read off the batch statistics.
  src = [int(np.flatnonzero(old_mean[0] == mean[0, j])[0]) for j in (3, 4)]
  cols = list(range(3)) + src
  np.testing.assert_array_equal(k, old_k[:, :, :, cols][:, :, :, :, cols])
  momentum = progressive.widen({"trace": old}, {"trace": target}, key)
  np.testing.assert_array_equal(momentum["trace"]["cell0"]["edges0"]["sep"]["k"], k)


def _config(**overrides):
  c = tiny_config(op_set="darts", partial_channels=4, edge_norm=False, **overrides)
  c.arch_optimizer.name = "drnas"
  c.arch_optimizer.warmup_epochs = 0
  c.progressive.enabled, c.progressive.partial_channels, c.progressive.keep_ops = True, 2, 4
  return c


@pytest.fixture(scope="module")
def progressive_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("progressive"))
  return workdir, train.train_and_evaluate(_config(), workdir, progress=False)


def test_second_stage_is_pruned_and_wider(progressive_run):
  workdir, result = progressive_run
  c = _config()
  state = result["state"]
  kernel = state["params"]["cell0"]["edges0"]["sep_conv_3x3"]["DilConv_0"]["Conv_1"]["kernel"]
  assert kernel.shape[-1] == c.channels // 2  # C/K_2, from C/K_1 = 1
  lines = [json.loads(l) for l in open(f"{workdir}/metrics.jsonl")]
  assert lines[0]["progressive"] == {"partial_channels": 2, "keep_ops": 4}
  assert "progressive" not in lines[1]
  # After the switch every edge mixes its 4 kept experts only, and the
  # genotype takes each edge's op among them.
  for t in CELL_TYPES:
    u = np.asarray(lines[1][f"mixture_{t}"])
    assert ((u > 0).sum(axis=1) == 4).all()
    space = search_setup.build_search(c).net.space
    for (op, src), dst in zip(result["genotype"].edges(t), np.repeat(np.arange(2, 6), 2)):
      e = next(k for k in space.incoming(dst) if space.edges[k][0] == src)
      assert u[e, space.ops.index(op)] > 0


def test_resume_across_the_switch_is_bit_identical(progressive_run, tmp_path, monkeypatch):
  _, full = progressive_run
  resumed = crash_then_resume(_config(), str(tmp_path), monkeypatch)
  assert jax.tree.structure(resumed["state"]) == jax.tree.structure(full["state"])
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert resumed["genotype"] == full["genotype"]


@pytest.mark.parametrize("overrides,message", [
    ({"progressive.partial_channels": 3}, "progressive.partial_channels 3 does not divide"),
    ({"progressive.keep_ops": 9}, "progressive.keep_ops 9 is more than the 8 ops"),
    ({"num_seeds": 2}, "progressive search with num_seeds 2"),
    ({"epochs": 1}, "progressive search needs epochs >= 2"),
])
def test_bad_progressive_config(overrides, message):
  c = _config()
  for key, value in overrides.items():
    node, *rest = key.split(".")
    if rest:
      c[node][rest[0]] = value
    else:
      c[key] = value
  with pytest.raises(config_checks.ConfigError, match=message):
    search_setup.validate_config(c)
