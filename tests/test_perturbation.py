"""Perturbation-based selection (DARTS-PT, Alg. 2): on a hand-built supernet
whose operation and edge strengths are known, and on a real search."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import search_setup
from xnas_jax import perturbation, train
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's
NUM_INPUTS = get_search_space().num_inputs  # the DARTS cell's
NUM_NODES = get_search_space().num_nodes  # the DARTS cell's
from search_configs import FEW_OPS, tiny_config


def _hand_built(op_set, seed=0, topology="darts"):
  """A 'supernet' whose validation accuracy drops by a known amount for each
  removed expert and each removed edge, with some experts already wiped."""
  space = get_search_space(op_set, topology)
  rng = np.random.default_rng(seed)
  shape = (space.num_edges, space.num_ops)
  # "none" is never a candidate (Wang et al. omit it); give it no strength.
  op_strength = {t: rng.random(shape) * np.array([o != "none" for o in space.ops])
                 for t in CELL_TYPES}
  edge_strength = {t: rng.random(space.num_edges) for t in CELL_TYPES}
  masks = {t: rng.random(shape) > 0.2 for t in CELL_TYPES}
  for t in CELL_TYPES:  # at least one live expert other than "none" per edge
    masks[t][:, space.num_ops - 1] = True
  u = {t: np.where(masks[t], 1.0, 0.0) / masks[t].sum(1, keepdims=True) for t in CELL_TYPES}
  calls = {"accuracy": 0, "tune": 0}

  def accuracy(u_now, masks_now):
    calls["accuracy"] += 1
    acc = 1.0
    for t in CELL_TYPES:
      assert np.all(u_now[t][~masks_now[t]] == 0)  # removed experts carry no weight
      # A removed edge costs its strength; an edge that lost its strongest
      # expert costs the difference to the strongest one it still has.
      gone_edge = ~masks_now[t].any(1)
      acc -= np.sum(edge_strength[t] * gone_edge)
      best_before = np.max(np.where(masks[t], op_strength[t], 0), 1)
      best_now = np.max(np.where(masks_now[t], op_strength[t], 0), 1)
      acc -= np.sum(np.where(gone_edge, 0.0, best_before - best_now))
    return acc

  def tune(u_now, masks_now):
    calls["tune"] += 1
    for t in CELL_TYPES:  # a decided edge is one-hot on its chosen expert
      decided = masks_now[t].sum(1) == 1
      np.testing.assert_array_equal(u_now[t][decided], masks_now[t][decided].astype(np.float32))

  return space, u, masks, op_strength, edge_strength, accuracy, tune, calls


@pytest.mark.parametrize("schedule", perturbation.SCHEDULES)
@pytest.mark.parametrize("op_set", ["darts", "xnas", "s2"])
def test_pt_picks_the_op_and_the_edges_whose_removal_hurts_most(op_set, schedule):
  space, u, masks, op_strength, edge_strength, accuracy, tune, calls = _hand_built(op_set)
  genotype, log = perturbation.select_core(space, u, masks, accuracy, tune, jax.random.key(0),
                                           schedule=schedule)
  ops_log = [l for l in log if l["phase"] == "operation"]
  assert len(ops_log) == 2 * space.num_edges
  for entry in ops_log:
    t, e = entry["cell"], space.edges.index(tuple(entry["edge"]))
    live = [o for o in range(space.num_ops) if masks[t][e, o] and space.ops[o] != "none"]
    expected = max(live, key=lambda o: op_strength[t][e, o])
    assert entry["chosen"] == space.ops[expected]
    assert set(entry["acc_without"]) == {space.ops[o] for o in live}
  # Topology: exactly two inputs per node, the two strongest edges.
  for t in CELL_TYPES:
    cell = genotype.edges(t)
    assert len(cell) == 2 * NUM_NODES
    for j in range(NUM_NODES):
      incoming = space.incoming(NUM_INPUTS + j)
      strongest = sorted(incoming, key=lambda e: -edge_strength[t][e])[:2]
      assert sorted(src for _, src in cell[2 * j:2 * j + 2]) == sorted(
          space.edges[e][0] for e in strongest)
      for op, src in cell[2 * j:2 * j + 2]:
        e = space.edges.index((src, NUM_INPUTS + j))
        assert op == next(l["chosen"] for l in ops_log
                          if l["cell"] == t and tuple(l["edge"]) == space.edges[e])
  assert "none" not in {op for op, _ in genotype.normal + genotype.reduce}
  # Tuning between rounds: per_decision, a round per edge and per node with
  # more than 2 inputs of each cell type; released (ruocwang/darts-pt's
  # pt_project), a round decides an edge, then a node, of both cell types.
  rounds = perturbation.num_rounds(space, schedule)
  assert calls["tune"] == rounds - 1
  if schedule == "per_decision":
    assert rounds == 2 * space.num_edges + 2 * sum(
        len(space.incoming(NUM_INPUTS + j)) > 2 for j in range(NUM_NODES))
  else:
    assert rounds == space.num_edges + NUM_NODES
    for r in range(space.num_edges):
      assert sorted(l["cell"] for l in ops_log if l["round"] == r) == sorted(CELL_TYPES)
    topo = [l for l in log if l["phase"] == "topology"]
    assert all(l["round"] >= space.num_edges for l in topo)
    for t in CELL_TYPES:  # each node decided in its own round
      assert len({l["round"] for l in topo if l["cell"] == t}) == len([l for l in topo
                                                                       if l["cell"] == t])


@pytest.mark.parametrize("schedule", perturbation.SCHEDULES)
def test_the_fixed_topology_has_no_topology_decisions(schedule):
  space, u, masks, _, _, accuracy, tune, calls = _hand_built("xnas", topology="fixed")
  genotype, log = perturbation.select_core(space, u, masks, accuracy, tune, jax.random.key(1),
                                           schedule=schedule)
  assert all(l["phase"] == "operation" for l in log)
  assert calls["tune"] == perturbation.num_rounds(space, schedule) - 1
  assert [src for _, src in genotype.normal] == [0, 1, 0, 2, 0, 3, 0, 4]


@pytest.mark.parametrize("arch_optimizer", ["xnas", "frozen"])
def test_pt_on_a_real_search(arch_optimizer, tmp_path):
  c = tiny_config(epochs=1, selection="perturbation", op_set=FEW_OPS)
  c.arch_optimizer.name = arch_optimizer
  c.pt.tune_epochs = 1
  result = train.train_and_evaluate(c, str(tmp_path), progress=False)
  g = result["genotype"]
  space = search_setup.build_search(c).net.space
  for cell in (g.normal, g.reduce):
    for j in range(NUM_NODES):
      assert len({src for _, src in cell[2 * j:2 * j + 2]}) == 2
  log = json.load(open(os.path.join(tmp_path, "selection_log.json")))
  for entry in log:
    if entry["phase"] == "operation":
      accs = entry["acc_without"]
      assert accs[entry["chosen"]] == min(accs.values())
  assert os.path.exists(os.path.join(tmp_path, "genotype_magnitude.json"))
  assert result["summary"]["selection"] == "perturbation"

  # The first decision's accuracies, recomputed independently on the searched
  # supernet (no decision and no fine-tuning before it).
  search = search_setup.build_search(c)
  state = result["state"]
  masks = search_setup.live_masks(search, state)
  u = search.mixture(state["arch"], masks)
  first = log[0]
  t, e = first["cell"], space.edges.index(tuple(first["edge"]))
  d, b = search.data, c.batch_size
  for name, logged in first["acc_without"].items():
    o = space.ops.index(name)
    u2 = dict(u, **{t: u[t].at[e, o].set(0.0)})
    m2 = dict(masks, **{t: masks[t].at[e, o].set(False)})
    correct = 0
    n = (len(d.val) // b) * b
    for i in range(0, n, b):
      x = (jnp.asarray(d.val.images[i:i + b]) - d.mean) / d.std
      logits, _ = search.net.apply({"params": state["params"],
                                    "batch_stats": state["batch_stats"]}, x, u2, m2, train=True,
                                   rng=jax.random.key(0))
      correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.asarray(d.val.labels[i:i + b])))
    assert logged == pytest.approx(correct / n, abs=1e-6)


def test_pt_edges_where_only_none_is_live_are_ranked_last_and_never_raise():
  space = get_search_space("darts")
  _, u, masks, _, _, accuracy, tune, _ = _hand_built("darts", seed=1)
  none = space.ops.index("none")
  only_none = [space.edges.index((1, 2)), space.edges.index((0, 3))]
  for t in CELL_TYPES:
    for e in only_none:
      masks[t][e] = False
      masks[t][e, none] = True
      u[t][e] = np.where(masks[t][e], 1.0, 0.0)
  fallback = {t: np.random.default_rng(5).random(u[t].shape) for t in CELL_TYPES}
  genotype, log = perturbation.select_core(space, u, masks, accuracy, tune, jax.random.key(0),
                                           fallback=fallback)
  for t in CELL_TYPES:
    cell = genotype.edges(t)
    assert len(cell) == 2 * NUM_NODES and all(op != "none" for op, _ in cell)
    # Node 2 has only two inputs: the none-only edge from 1 is kept, with the
    # fallback's strongest op other than none; node 3 drops its none-only edge.
    e12 = space.edges.index((1, 2))
    expected = space.ops[int(np.argmax(np.where(np.arange(space.num_ops) != none,
                                                fallback[t][e12], -np.inf)))]
    assert cell[1] == (expected, 1)
    assert 0 not in [src for _, src in cell[2:4]]
  assert sum(l["phase"] == "fallback" for l in log) == 2
  assert sum(l["phase"] == "operation" and l["chosen"] is None for l in log) == 4


def test_released_schedule_reads_the_architecture_tuning_leaves():
  """The released tuning also trains the architecture: the weights ``tune``
  returns replace the supernet's on the edges not yet decided."""
  space, u, masks, _, _, accuracy, _, _ = _hand_built("darts")
  new_u = {t: np.where(masks[t], np.random.default_rng(3).random(u[t].shape), 0.0)
           for t in CELL_TYPES}
  seen = []

  def tune(u_now, masks_now):
    return new_u

  def spy(u_now, masks_now):
    seen.append({t: u_now[t].copy() for t in CELL_TYPES})
    return accuracy(u_now, masks_now)

  _, log = perturbation.select_core(space, u, masks, spy, tune, jax.random.key(0))
  first, second = log[0], log[2]  # round 0 (normal, reduce), then round 1
  assert first["round"] == 0 and second["round"] == 1
  t, e = second["cell"], space.edges.index(tuple(second["edge"]))
  n_first = len(log[0]["acc_without"]) + len(log[1]["acc_without"])
  later = seen[n_first]  # the first evaluation of round 1 (one op of edge e removed)
  decided = {space.edges.index(tuple(l["edge"])) for l in log[:2] if l["cell"] == t}
  for k in set(range(space.num_edges)) - decided - {e}:
    np.testing.assert_allclose(later[t][k], new_u[t][k], rtol=1e-6)
  for k in decided:  # one-hot on the chosen op, not the architecture's weights
    assert sorted(np.unique(later[t][k])) == [0.0, 1.0]
