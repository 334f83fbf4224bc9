"""An architecture per cell (Bi et al.'s S2, ``arch_sharing="cell"``): every
cell its own forecasters with the theory's rate for one replica, a genotype
of one cell per layer, and its evaluation network."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_configs import tiny_config
from xnas_jax import config_defaults
from xnas_jax import retrain
from xnas_jax import search_setup
from xnas_jax import spaces
from xnas_jax import train
from xnas_jax.genotype import CellsGenotype
from xnas_jax.search_space import get_search_space, per_cell


def _s2(**overrides):
  return tiny_config(op_set="s2", topology="fixed", arch_sharing="cell", **overrides)


def test_per_cell_space_keeps_each_layers_experts():
  """S1's per-edge experts differ between normal and reduction cells: each
  layer's cell type gets its own structural type's (reductions at 1/3, 2/3)."""
  s1 = get_search_space("s1")
  space = per_cell(s1, 6)
  assert space.cell_types == tuple(f"cell{i}" for i in range(6))
  for i in range(6):
    want = s1.available_mask("reduce" if i in (2, 4) else "normal")
    np.testing.assert_array_equal(space.available_mask(f"cell{i}"), want)


def test_every_cell_is_one_replica_with_the_theorys_rate():
  """XNAS sec. 3.1 for r = 1: T = d E (one cell, every validation example of
  every epoch) and eta* = sqrt(2 ln N / (T L^2)) (eq. 4), for each cell."""
  search = search_setup.build_search(_s2())
  net = search.net
  assert net.space.cell_types == ("cell0", "cell1", "cell2")
  assert net.replicas == {"cell0": 1, "cell1": 1, "cell2": 1}
  assert [c.reduction for c in net.cells] == [False, True, True]  # 3 cells: at 1 and 2
  opt, c = search.arch_opt, search.config
  d = search.steps_per_epoch * c.batch_size
  for t in net.space.cell_types:
    assert opt.horizons[t] == d * c.epochs
    assert opt.learning_rates[t] == pytest.approx(
        math.sqrt(2 * math.log(2) / (d * c.epochs * c.arch_optimizer.grad_bound ** 2)))


def test_search_writes_one_cell_per_layer_and_its_network_builds_each(tmp_path):
  out = train.train_and_evaluate(_s2(), str(tmp_path / "s"), progress=False)
  with open(tmp_path / "s" / "genotype.json") as f:
    written = json.load(f)
  g = spaces.parse_genotype(written)
  assert isinstance(g, CellsGenotype) and g == out["genotype"]
  assert len(g.cells) == 3 and all(len(cell) == 8 for cell in g.cells)
  assert all(op in ("skip_connect", "sep_conv_3x3") for op in g.ops())
  with open(tmp_path / "s" / "metrics.jsonl") as f:
    line = json.loads(f.readline())
  assert {"mixture_cell0", "mixture_cell1", "mixture_cell2"} <= set(line)

  e = config_defaults.eval_config()
  e.channels, e.num_cells, e.epochs, e.batch_size, e.limit, e.num_devices = 4, 3, 1, 32, 96, 1
  run = retrain.build(e, g)  # each layer builds its own cell
  k = jax.random.key(0)
  params = jax.eval_shape(lambda: run.net.init({"params": k, "dropout": k},
                                               jnp.zeros((2, 8, 8, 1)), True))["params"]
  for i, cell in enumerate(g.cells):
    # The edges with weights: its own separable convs, and in a reduction cell
    # (cells 1 and 2 of 3) the factorized reduce of a skip from an input.
    weighted = {int(k[4:]) for k in params[f"cell{i}"] if k.startswith("edge")}
    want = {k for k, (op, src) in enumerate(cell)
            if op == "sep_conv_3x3" or (op == "skip_connect" and i in (1, 2) and src < 2)}
    assert weighted == want
  e.num_cells = 5
  with pytest.raises(retrain.ConfigError, match="one cell per layer for 3 layers; num_cells is 5"):
    retrain.build(e, g)


@pytest.mark.parametrize("overrides,message", [
    ({"budget.metric": "flops", "budget.target": 1.0},
     "arch_sharing='cell' cannot have budget.metric='flops'"),
    ({"space": "nb201", "op_set": "nb201"}, "arch_sharing='cell' is not available on NAS-Bench"),
    ({"arch_sharing": "layer"}, "unknown arch_sharing 'layer'"),
])
def test_options_that_cannot_have_it_are_refused(overrides, message):
  c = _s2()
  for k, v in overrides.items():
    if "." in k:
      section, key = k.split(".")
      c[section][key] = v
    else:
      c[k] = v
  with pytest.raises(train.ConfigError, match=message):
    train.validate_config(c)
