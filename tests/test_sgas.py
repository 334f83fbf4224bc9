"""SGAS's scores and decisions against the release's ``edge_decision`` and
``check_edges`` (lightaime/sgas ``cnn/train_search.py``, ``model_search.py``),
ported to NumPy here; its decisions as optimizer state."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xnas_jax import checkpointing
from xnas_jax import sgas
from xnas_jax.search_space import get_search_space

SPACE = get_search_space("darts")  # 14 edges, 8 ops with none first, 2 kept per node
NONE = SPACE.ops.index("none")


def np_normalize(v):
  span = v.max() - v.min()
  return (v - v.min()) / span if span > 0 else np.zeros_like(v)


def release_decision(alphas, selected, flags, history, criterion):
  """``edge_decision`` + ``check_edges`` on one cell type, in NumPy."""
  e = np.exp(alphas - alphas.max(-1, keepdims=True))
  mat = e / e.sum(-1, keepdims=True)
  importance = mat[:, 1:].sum(-1)
  probs = mat[:, 1:] / importance[:, None]
  entropy = -(probs * np.log(probs)).sum(-1) / np.log(probs.shape[1])
  score = np_normalize(importance) * np_normalize(1 - entropy)
  if criterion == 2:
    inter = (np.mean([np.minimum(h, probs).sum(-1) for h in history], axis=0) if history
             else np.zeros(len(probs)))
    score = score * np_normalize(inter)
  masked = np.where(flags, score, -np.inf)
  edge = int(np.argmax(masked))
  selected, flags = selected.copy(), flags.copy()
  selected[edge], flags[edge] = int(np.argmax(probs[edge])) + 1, False
  start, n = 0, 2
  for _ in range(4):  # check_edges
    end = start + n
    if (~flags[start:end]).sum() >= 2:
      for j in range(start, end):
        if flags[j]:
          flags[j], selected[j] = False, 0  # pruned: 'none'
    start, n = end, n + 1
  return selected, flags, probs


def _ours_to_release(decided):
  """Our ``decided`` (op index, UNDECIDED, PRUNED) as the release's
  ``selected_idxs`` (op index, -1, 0 = none) and ``candidate_flags``."""
  d = np.asarray(decided)
  return np.where(d == sgas.PRUNED, 0, d), d == sgas.UNDECIDED


@pytest.mark.parametrize("criterion", [1, 2])
def test_scores_and_decisions_are_the_release_s(criterion):
  rng = np.random.default_rng(criterion)
  available = jnp.ones((SPACE.num_edges, SPACE.num_ops), bool)
  decided = jnp.full(SPACE.num_edges, sgas.UNDECIDED, jnp.int32)
  history, filled = jnp.zeros((4, SPACE.num_edges, SPACE.num_ops)), jnp.int32(0)
  np_history = []
  incoming = [SPACE.incoming(d) for d in SPACE.nodes]
  for _ in range(8):  # every decision of a DARTS cell; the logits change in between
    a = rng.normal(size=(SPACE.num_edges, SPACE.num_ops)).astype(np.float32) * 2
    selected, flags = _ours_to_release(decided)
    expected, expected_flags, probs = release_decision(a.astype(np.float64), selected, flags,
                                                       np_history, criterion)
    score = sgas.scores(jnp.asarray(a), available, NONE, criterion, history, filled)
    _, p, _ = sgas.edge_stats(jnp.asarray(a), available, NONE)
    np.testing.assert_allclose(np.asarray(p)[:, 1:], probs, rtol=1e-5)
    decided = sgas.decide(score, p, decided, incoming, SPACE.kept_per_node)
    got, got_flags = _ours_to_release(decided)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_flags, expected_flags)
    np_history = (np_history + [probs])[-4:]
    history = jnp.concatenate([history[1:], p[None]]) if int(filled) == 4 else history.at[
        int(filled)].set(p)
    filled = jnp.minimum(filled + 1, 4)
  d = np.asarray(decided)
  assert (d == sgas.UNDECIDED).sum() == 0 and (d >= 0).sum() == 8  # two edges a node
  for edges in incoming:
    assert (d[edges] >= 0).sum() == 2 and (d[edges] != NONE).all()


def test_decisions_as_optimizer_state_freeze_prune_and_survive_a_checkpoint(tmp_path):
  """Two steps an epoch, decisions from epoch 1 every epoch: after epoch e
  (0-based) >= 1 each cell type has e decided edges; decided and pruned
  edges get no updates; the live mask is one op or none; a checkpoint round
  trip keeps it all."""
  avail = {t: SPACE.available_mask(t) for t in SPACE.cell_types}
  tx = optax.chain(optax.sgd(0.1), sgas.decisions(SPACE, avail, steps_per_epoch=2, start=1,
                                                  interval=1))
  key = jax.random.key(0)
  params = {t: 1e-3 * jax.random.normal(jax.random.fold_in(key, i), (SPACE.num_edges,
                                                                   SPACE.num_ops))
            for i, t in enumerate(SPACE.cell_types)}
  state = tx.init(params)
  for step in range(8):  # epochs 0..3
    grads = {t: jax.random.normal(jax.random.fold_in(key, 100 + step), p.shape) * 5
             for t, p in params.items()}
    before = state[1].decided
    updates, state = tx.update(grads, state, params)
    for t in SPACE.cell_types:
      frozen = np.asarray(before[t]) != sgas.UNDECIDED
      assert (np.asarray(updates[t])[frozen] == 0).all()
    params = optax.apply_updates(params, updates)
    epoch = step // 2
    decided = {t: np.asarray(state[1].decided[t]) for t in SPACE.cell_types}
    made = max(0, epoch) if step % 2 == 1 else max(0, epoch - 1)
    for t in SPACE.cell_types:
      assert (decided[t] >= 0).sum() == made, (step, decided[t])
  mask = {t: np.asarray(m) for t, m in state[1].mask.items()}
  for t in SPACE.cell_types:
    d = decided[t]
    assert (mask[t][d >= 0].sum(-1) == 1).all() and (mask[t][d == sgas.PRUNED].sum(-1) == 0).all()
    assert (mask[t][d == sgas.UNDECIDED] == avail[t][d == sgas.UNDECIDED]).all()
    assert mask[t][np.arange(len(d))[d >= 0], d[d >= 0]].all()
  mngr = checkpointing.manager(os.path.join(str(tmp_path), "checkpoints"))
  checkpointing.save(mngr, 4, state)
  restored = checkpointing.restore_newest(mngr, lambda meta: jax.eval_shape(lambda: state)).state
  mngr.close()
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_pending_edge_prunes_its_node_and_settles_to_the_op_given():
  """Without ``choose_op`` SGAS picks the edge (the same one) but leaves its
  op ``PENDING``: the edge keeps running every expert and counts toward its
  node's two, and ``settle`` gives it the op from outside (SGAS+PT)."""
  avail = {t: SPACE.available_mask(t) for t in SPACE.cell_types}
  # Edges 2 and 3 (two of node 3's inputs 2, 3, 4) sure of op 5: decided first.
  params = {t: jax.random.normal(jax.random.key(i), (SPACE.num_edges, SPACE.num_ops))
            .at[2:4, 5].add(6.0) for i, t in enumerate(SPACE.cell_types)}
  grads = jax.tree.map(jnp.zeros_like, params)
  states = {}
  for choose in (True, False):
    tx = optax.chain(optax.sgd(0.1), sgas.decisions(SPACE, avail, steps_per_epoch=1, start=0,
                                                    interval=1, choose_op=choose))
    state = tx.init(params)
    for _ in range(2):
      _, state = tx.update(grads, state, params)
      if not choose:
        pend = sgas.pending(state)
        assert all(len(v) == 1 for v in pend.values())
        for t, (e,) in pend.items():
          assert np.asarray(state[1].mask[t])[e].tolist() == avail[t][e].tolist()  # runs all
          # on the host and back, as the loop settles it
          state = jax.device_put(sgas.settle(jax.device_get(state), t, e, 3))
    states[choose] = state
  for t in SPACE.cell_types:
    by_sgas, by_caller = np.asarray(states[True][1].decided[t]), np.asarray(states[False][1].decided[t])
    np.testing.assert_array_equal(by_sgas >= 0, by_caller >= 0)  # the same edges decided
    np.testing.assert_array_equal(by_sgas == sgas.PRUNED, by_caller == sgas.PRUNED)
    assert set(by_caller[by_caller >= 0]) == {3} and set(by_sgas[by_sgas >= 0]) == {5}
    assert by_caller[4] == sgas.PRUNED  # node 3 has its two
    mask = np.asarray(states[False][1].mask[t])
    assert (mask[by_caller >= 0] == np.eye(SPACE.num_ops, dtype=bool)[3]).all()
  assert sgas.pending(states[False]) == {t: [] for t in SPACE.cell_types}
  with pytest.raises(ValueError, match="not pending"):
    sgas.settle(states[False], SPACE.cell_types[0], int(np.flatnonzero(by_caller >= 0)[0]), 2)
