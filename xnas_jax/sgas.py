"""SGAS (Li et al., CVPR 2020): greedy edge decisions during the search.

DARTS chooses the whole cell once, after the search; the supernet it chose
from was trained with every edge mixed, so the discrete cell's accuracy can
differ much from the supernet's.  SGAS decides one edge of each cell type at
a time, from epoch ``start`` on, every ``interval`` epochs, and fixes it:
the edge runs its chosen op alone from then on, and the architecture and
the weights adapt to the decisions taken.

As the release computes it (lightaime/sgas, ``cnn/train_search.py``
``edge_decision`` and ``model_search.check_edges``), at the end of an epoch,
per cell type, from ``mat = softmax(a)`` over the space's experts:

* edge importance (eq. 3): ``S_EI = sum of mat over the ops other than none``;
* selection certainty (eq. 4): ``S_SC = 1 - H(p) / ln n``, with ``p`` the
  non-none weights divided by ``S_EI`` and ``n`` their number;
* criterion 1 (eq. 5): ``score = norm(S_EI) * norm(S_SC)``, where ``norm`` maps
  a vector over all the edges to [0, 1] (``(v - min) / (max - min)``, 0 when
  constant); criterion 2 (eq. 7) multiplies by ``norm(S_SS)``, the mean
  histogram intersection of ``p`` with the ``p`` of the last ``history``
  (4) epochs (selection stability);
* the undecided edge with the highest score gets the op of its largest
  ``p``; its logits are frozen (zero updates);
* a node with ``kept_per_node`` decided edges has its other edges pruned
  (no expert left, so they cost nothing and contribute 0).

The decisions live in the optimizer state as a ``mask`` of live experts,
the wipeout mask's role: the supernet skips every other expert (its
``lax.cond``), magnitude selection reads a decided edge as weight 1, and a
checkpoint carries the decisions over a resume.  The release's batch size
increase after each decision (it uses the memory the decisions free) is not
done: the step's shapes stay fixed, so it compiles once.  Epochs are counted
in architecture steps, so ``warmup_epochs`` postpone the decisions.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xnas_jax import arch as arch_lib
from xnas_jax.search_space import SearchSpace

PyTree = Any
UNDECIDED, PRUNED, PENDING = -1, -2, -3  # PENDING: the edge is chosen, its op not yet
START, INTERVAL, HISTORY = 9, 5, 4  # the release's warmup_dec_epoch, decision_freq, history_size


class SGASState(NamedTuple):
  count: jax.Array  # architecture steps taken
  mask: PyTree  # {cell type: [E, N] bool}: the experts still live
  decided: PyTree  # {cell type: [E] int32}: UNDECIDED, PRUNED, PENDING or the op chosen
  history: PyTree  # {cell type: [H, E, N]}: the last H epochs' non-none weights p, epoch
  # e in slot e % H (the mean over them does not depend on their order)


def normalize(v: jax.Array) -> jax.Array:
  """The release's ``utils.normalize``: ``(v - min) / (max - min)``, zeros if constant."""
  lo, span = jnp.min(v), jnp.max(v) - jnp.min(v)
  return jnp.where(span > 0, (v - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def edge_stats(a: jax.Array, available: jax.Array, none: int | None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(S_EI [E], p [E, N], S_SC [E])`` of logits ``a`` over the ``available`` experts."""
  mat = arch_lib.masked_softmax(a, available)
  ops = available if none is None else available.at[:, none].set(False)
  importance = jnp.sum(jnp.where(ops, mat, 0.0), axis=-1)
  p = jnp.where(ops, mat, 0.0) / jnp.maximum(importance, 1e-30)[:, None]
  n = jnp.sum(ops, axis=-1)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
  certainty = 1.0 - jnp.where(n > 1, entropy / jnp.log(jnp.maximum(n, 2)), 0.0)
  return importance, p, certainty


def stability(history: jax.Array, filled: jax.Array, p: jax.Array) -> jax.Array:
  """``S_SS`` [E]: the mean over the held epochs of ``sum_ops min(p_old, p)``."""
  held = jnp.arange(history.shape[0]) < filled
  inter = jnp.sum(jnp.minimum(history, p[None]), axis=-1)  # [H, E]
  return jnp.sum(jnp.where(held[:, None], inter, 0.0), axis=0) / jnp.maximum(filled, 1)


def scores(a: jax.Array, available: jax.Array, none: int | None, criterion: int = 1,
           history: jax.Array | None = None, filled: jax.Array | None = None) -> jax.Array:
  """Criterion 1's (or 2's) score of every edge (decided ones too: the
  release normalizes over all the edges)."""
  return score_of(*edge_stats(a, available, none), criterion, history, filled)


def score_of(importance: jax.Array, p: jax.Array, certainty: jax.Array, criterion: int = 1,
             history: jax.Array | None = None, filled: jax.Array | None = None) -> jax.Array:
  """``scores`` from ``edge_stats``'s results."""
  score = normalize(importance) * normalize(certainty)
  if criterion == 2:
    score = score * normalize(stability(history, filled, p))
  return score


def decide(score: jax.Array, p: jax.Array, decided: jax.Array, incoming: Sequence[Sequence[int]],
           kept_per_node: int, choose_op: bool = True) -> jax.Array:
  """``decided`` after one decision: the undecided edge of the highest score
  takes the op of its largest ``p`` (or, without ``choose_op``, becomes
  ``PENDING``: its op is chosen outside, see ``settle``); a node with
  ``kept_per_node`` decided edges has its other undecided edges pruned
  (``check_edges``)."""
  open_ = decided == UNDECIDED
  edge = jnp.argmax(jnp.where(open_, score, -jnp.inf))
  op = jnp.argmax(p[edge]) if choose_op else PENDING
  decided = decided.at[edge].set(jnp.asarray(op, decided.dtype))
  if kept_per_node > 0:
    for edges in incoming:
      idx = np.asarray(edges)
      full = jnp.sum(decided[idx] != UNDECIDED) >= kept_per_node
      decided = decided.at[idx].set(jnp.where(full & (decided[idx] == UNDECIDED), PRUNED,
                                              decided[idx]))
  return decided


def live(decided: jax.Array, available: jax.Array) -> jax.Array:
  """The experts an edge runs: all available ones while undecided or
  pending, the op chosen once decided, none once pruned."""
  chosen = jax.nn.one_hot(jnp.maximum(decided, 0), available.shape[-1], dtype=bool)
  open_ = (decided == UNDECIDED) | (decided == PENDING)
  return jnp.where(open_[:, None], available,
                   jnp.where((decided >= 0)[:, None], chosen & available, False))


def decisions(space: SearchSpace, available: dict[str, np.ndarray], steps_per_epoch: int,
              start: int = START, interval: int = INTERVAL, criterion: int = 1,
              history_size: int = HISTORY, choose_op: bool = True
              ) -> optax.GradientTransformation:
  """SGAS's decisions as an optax transformation of the architecture logits,
  chained after their optimizer: it zeroes the updates of decided and
  pruned edges and, at the end of epoch ``start``, ``start + interval``, ...
  (0-based, counted in its own steps of ``steps_per_epoch``), decides one
  edge of each cell type that has one undecided.

  Without ``choose_op`` the decided edge is left ``PENDING``: SGAS chooses
  the edge and the caller its op, before the next step, with ``pending``
  and ``settle`` (DARTS-PT's SGAS+PT chooses it by perturbation)."""
  none = space.ops.index("none") if "none" in space.ops else None
  incoming = [space.incoming(d) for d in space.nodes]
  types = space.cell_types

  def init(params):
    return SGASState(
        count=jnp.zeros([], jnp.int32),
        mask={t: jnp.array(available[t], bool) for t in types},
        decided={t: jnp.full(params[t].shape[:1], UNDECIDED, jnp.int32) for t in types},
        history={t: jnp.zeros((history_size,) + params[t].shape, params[t].dtype) for t in types})

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("SGAS's decisions need the architecture parameters")
    open_ = {t: state.decided[t] == UNDECIDED for t in types}
    updates = dict(updates, **{t: jnp.where(open_[t][:, None], updates[t], 0.0) for t in types})
    new_params = {t: params[t] + updates[t] for t in types}
    count = state.count + 1
    epoch_end = count % steps_per_epoch == 0
    epoch = state.count // steps_per_epoch
    due = epoch_end & (epoch >= start) & ((epoch - start) % interval == 0)
    decided, history = {}, {}
    filled = jnp.minimum(epoch, history_size)  # the epochs before this one held in history
    for t in types:
      stats = edge_stats(new_params[t], jnp.asarray(available[t]), none)
      score = score_of(*stats, criterion, state.history[t], filled)
      now = due & jnp.any(open_[t])
      decided[t] = jnp.where(
          now, decide(score, stats[1], state.decided[t], incoming, space.kept_per_node,
                      choose_op),
          state.decided[t])
      history[t] = jnp.where(epoch_end, state.history[t].at[epoch % history_size].set(stats[1]),
                             state.history[t])
    mask = {t: live(decided[t], jnp.asarray(available[t])) for t in types}
    return updates, SGASState(count, mask, decided, history)

  return optax.GradientTransformation(init, update)


def _is_state(x) -> bool:
  return isinstance(x, SGASState)


def pending(opt_state: PyTree) -> dict[str, list[int]]:
  """The ``PENDING`` edges of each cell type in an optimizer state that holds
  an ``SGASState`` (a chain's), empty lists where there are none."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_state) if _is_state(s)]
  out: dict[str, list[int]] = {}
  for s in found:
    for t, d in s.decided.items():
      out.setdefault(t, []).extend(int(e) for e in np.flatnonzero(np.asarray(d) == PENDING))
  return out


def settle(opt_state: PyTree, cell_type: str, edge: int, op: int) -> PyTree:
  """``opt_state`` with the pending ``edge`` of ``cell_type`` decided as
  ``op``: the edge runs that op alone from the next step on."""
  def one(s):
    if not _is_state(s):
      return s
    if int(s.decided[cell_type][edge]) != PENDING:
      raise ValueError(f"edge {edge} of the {cell_type} cell is not pending")
    d = jnp.asarray(s.decided[cell_type]).at[edge].set(op)
    # A pending edge's mask is its available experts, so ``live`` over the
    # current mask gives every edge's experts under the new decision.
    return s._replace(decided=dict(s.decided, **{cell_type: d}),
                      mask=dict(s.mask, **{cell_type: live(d, jnp.asarray(s.mask[cell_type]))}))
  return jax.tree.map(one, opt_state, is_leaf=_is_state)
