"""Perturbation-based architecture selection (DARTS-PT; Wang et al., ICLR 2021,
sec. 4 and Alg. 2 of appendix A.3).

The strength of an operation is how much the supernet's validation accuracy
drops when that operation alone is removed from its edge (sec. 4.1):

* operation phase: edges in random order; on each edge evaluate
  ``ACC_{\\o}`` for every live operation ``o`` (``none`` excluded where the
  space chooses edges, as the paper does for DARTS; on NAS-Bench-201, whose
  cells keep every edge, ``none`` is an operation like the others, as
  darts-pt's NAS-Bench-201 code does), keep ``argmin_o ACC_{\\o}`` and discretize the edge
  to it (its mixture weight becomes one-hot);
* topology phase: nodes in random order; for each node evaluate ``ACC_{\\e}``
  with each incoming edge removed, keep the two edges with the lowest
  accuracy, prune the others;
* between decisions the supernet is tuned.  By default this follows the
  released code (ruocwang/darts-pt, ``sota/cnn/projection.py``'s
  ``pt_project``): each round decides one edge (then one node) of *both*
  cell types, ``proj_intv`` epochs of tuning separate the rounds (14 + 4
  rounds in the DARTS space), and tuning resets the weight optimizer to SGD
  at a tenth of the search's rate on a cosine schedule and keeps training
  the architecture on the undecided edges.

Removing an operation multiplies its mixture weight by 0 without
renormalizing the others (as the released code does) and clears its bit in
the dynamic live-expert mask, so the removed expert is skipped under
``lax.cond``: the same static active set, one compiled program for every
candidate.  Accuracies use the supernet in training mode (batch statistics),
again as the released code, since running statistics do not describe a
perturbed supernet.

``select`` works on any supernet this library trains (XNAS, DARTS, amended,
DrNAS, and the fixed-alpha supernet of ``arch_optimizer.name = "frozen"``):
it reads the mixture weights through ``Search.mixture`` and the live experts
through ``search_setup.live_masks``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xnas_jax import input_pipeline
from xnas_jax import search_steps
from xnas_jax import spaces
from xnas_jax.search_setup import live_masks, weight_optimizer
from xnas_jax.search_space import SearchSpace

PyTree = Any
Weights = dict[str, np.ndarray]  # per cell type [E, N]


@dataclasses.dataclass
class Projection:
  """The decisions so far: per cell type, the chosen op of each edge (-1:
  undecided) and whether each edge is still in the cell."""
  choice: dict[str, np.ndarray]  # [E] int
  kept: dict[str, np.ndarray]  # [E] bool

  @classmethod
  def empty(cls, space: SearchSpace) -> "Projection":
    return cls({t: np.full(space.num_edges, -1) for t in space.cell_types},
               {t: np.ones(space.num_edges, bool) for t in space.cell_types})

  def apply(self, u: Weights, masks: Weights) -> tuple[Weights, Weights]:
    """The supernet's mixture weights and live experts under the decisions."""
    new_u, new_m = {}, {}
    for t in self.choice:
      n = u[t].shape[-1]
      decided = self.choice[t] >= 0
      onehot = np.eye(n, dtype=bool)[np.maximum(self.choice[t], 0)]
      m = np.where(decided[:, None], onehot, masks[t]) & self.kept[t][:, None]
      w = np.where(decided[:, None], onehot.astype(np.float32), u[t])
      new_u[t], new_m[t] = np.where(m, w, 0.0).astype(np.float32), m
    return new_u, new_m


def removed(u: Weights, masks: Weights, cell_type: str,
            index: int | tuple[int, int]) -> tuple[Weights, Weights]:
  """``u`` and ``masks`` with ``index`` of a cell type removed (weight 0,
  masked): an ``(edge, op)`` pair removes one expert, an ``edge`` all of them."""
  u2, m2 = dict(u), dict(masks)
  u2[cell_type] = u[cell_type].copy()
  m2[cell_type] = masks[cell_type].copy()
  u2[cell_type][index] = 0.0
  m2[cell_type][index] = False
  return u2, m2


Accuracy = Callable[[Weights, Weights], float]
# Fine-tunes the supernet (in place) under the projected weights and live
# experts; returns the architecture's new mixture weights when it trains them
# too (the released schedule), else None.
Tune = Callable[[Weights, Weights], "Weights | None"]

# "released": ruocwang/darts-pt's pt_project: each round decides one edge (then
# one node) of *each* cell type, in random order, with proj_intv tuning epochs
# between rounds; "per_decision": one (cell, edge) or (cell, node) decision
# per round, in one random order over both cell types.
SCHEDULES = ("released", "per_decision")


def select_core(space: SearchSpace, u: Weights, masks: Weights, accuracy: Accuracy, tune: Tune,
                key: jax.Array, fallback: Weights | None = None, schedule: str = "released",
                ) -> tuple[Genotype, list[dict[str, Any]]]:
  """Alg. 2 given the supernet as two callables.

  The rounds (``schedule``): the released code's (default), where a round
  decides an edge of the normal *and* of the reduction cell (operation phase,
  ``E`` rounds), then a node of each (topology phase, one round per node,
  nodes with two inputs included), with ``tune`` between rounds (not after
  the last); or one decision per round.

  An edge on which only ``none`` is live has no operation to perturb: the
  operation phase logs it and moves on, and the topology phase ranks it after
  every other incoming edge of its node, so it is kept only when the node
  has no two others; it then takes its strongest operation other than
  ``none`` by ``fallback`` (XNAS eq. 1's weights over all experts), as
  magnitude selection does, and the log says so.  Every node gets two inputs.

  Args:
    space: the search space.
    u, masks: the supernet's mixture weights and live experts ``[E, N]``.
    accuracy: validation accuracy of the supernet run with given weights and
      live experts.
    tune: fine-tunes the supernet under given weights and experts (see ``Tune``).
    key: orders the edges and the nodes.
    fallback: the weights that choose the op of a ``none``-only edge (default ``u``).
    schedule: one of ``SCHEDULES``.

  Returns:
    The genotype and a log: one entry per decision (with its ``round``), with
    the accuracies that made it.
  """
  proj = Projection.empty(space)
  skipped = ("none",) if space.kept_per_node else ()  # none is a choice where edges stay
  log: list[dict[str, Any]] = []
  state = {"u": u}

  def decide_op(t, e, r):
    pu, pm = proj.apply(state["u"], masks)
    cands = [o for o in range(space.num_ops) if pm[t][e, o] and space.ops[o] not in skipped]
    if not cands:
      log.append({"phase": "operation", "round": r, "cell": t, "edge": list(space.edges[e]),
                  "acc_without": {}, "chosen": None,
                  "note": "only 'none' is live: ranked last in the topology phase"})
      return
    accs = {space.ops[o]: accuracy(*removed(pu, pm, t, (e, o))) for o in cands}
    best = min(cands, key=lambda o: accs[space.ops[o]])  # removal hurts most
    proj.choice[t][e] = best
    log.append({"phase": "operation", "round": r, "cell": t, "edge": list(space.edges[e]),
                "acc_without": accs, "chosen": space.ops[best]})

  def decide_node(t, dst, r):
    incoming = [e for e in space.incoming(dst) if proj.kept[t][e]]
    if len(incoming) <= space.kept_per_node:
      return
    pu, pm = proj.apply(state["u"], masks)
    accs = {e: accuracy(*removed(pu, pm, t, e)) for e in incoming}
    keep = sorted(incoming, key=lambda e: (proj.choice[t][e] < 0, accs[e]))[:space.kept_per_node]
    for e in incoming:
      proj.kept[t][e] = e in keep
    log.append({"phase": "topology", "round": r, "cell": t, "node": dst,
                "acc_without": {str(space.edges[e][0]): a for e, a in accs.items()},
                "kept_inputs": sorted(space.edges[e][0] for e in keep)})

  decide = {"operation": decide_op, "topology": decide_node}
  plan = rounds(space, schedule, key)
  for r, decisions in enumerate(plan):
    for phase, t, where in decisions:
      decide[phase](t, where, r)
    if r + 1 < len(plan):
      new_u = tune(*proj.apply(state["u"], masks))
      if new_u is not None:
        state["u"] = new_u
  fallback = state["u"] if fallback is None else fallback
  for t in space.cell_types:
    for e in range(space.num_edges):
      if proj.kept[t][e] and proj.choice[t][e] < 0:
        avail = space.available_mask(t)[e] & (np.asarray(space.ops) != "none")
        proj.choice[t][e] = int(np.argmax(np.where(avail, fallback[t][e], -np.inf)))
        log.append({"phase": "fallback", "cell": t, "edge": list(space.edges[e]),
                    "chosen": space.ops[proj.choice[t][e]],
                    "note": "only 'none' was live on this edge and its node needed it: "
                            "its strongest other operation by weight"})
  return genotype_of(space, proj), log


def rounds(space: SearchSpace, schedule: str,
           key: jax.Array) -> list[list[tuple[str, str, int]]]:
  """The decision rounds of ``select_core``: per round, its ``(phase, cell
  type, edge or node)`` decisions, in the order ``key`` draws (see ``SCHEDULES``)."""
  if schedule not in SCHEDULES:
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {list(SCHEDULES)}")
  nodes, types = list(space.nodes), space.cell_types
  k_ops, k_nodes = jax.random.split(key)
  if schedule == "released":
    edge_order = {t: np.asarray(jax.random.permutation(k, space.num_edges))
                  for t, k in zip(types, jax.random.split(k_ops, len(types)))}
    node_order = {t: np.asarray(jax.random.permutation(k, len(nodes)))
                  for t, k in zip(types, jax.random.split(k_nodes, len(types)))}
    plan = [[("operation", t, int(edge_order[t][i])) for t in types]
            for i in range(space.num_edges)]
    if space.chooses_edges:  # the fixed topology and NAS-Bench-201 have no choice
      plan += [[("topology", t, nodes[int(node_order[t][i])]) for t in types]
               for i in range(len(nodes))]
    return plan
  pairs = [(t, e) for t in types for e in range(space.num_edges)]
  plan = [[("operation", *pairs[int(i)])]
          for i in np.asarray(jax.random.permutation(k_ops, len(pairs)))]
  kept = space.kept_per_node
  cell_nodes = [(t, d) for t in types for d in nodes
                if kept and len(space.incoming(d)) > kept]
  return plan + [[("topology", *cell_nodes[int(i)])]
                 for i in np.asarray(jax.random.permutation(k_nodes, len(cell_nodes)))]


def genotype_of(space: SearchSpace, proj: Projection):
  """The genotype of the decisions, in the space's own form (``spaces``)."""
  cells = {}
  for t in space.cell_types:
    edges = []
    for dst in space.nodes:
      kept = [e for e in space.incoming(dst) if proj.kept[t][e]]
      need = space.kept_per_node or len(space.incoming(dst))
      if len(kept) != need:
        raise ValueError(f"node {dst} of the {t} cell has {len(kept)} inputs "
                         f"after selection; {need} are needed")
      kept = sorted(kept, key=lambda e: space.edges[e][0])
      edges.extend((space.ops[int(proj.choice[t][e])], space.edges[e][0]) for e in kept)
    cells[t] = tuple(edges)
  return spaces.family(space).from_cells(space, cells)


def select(search, state: PyTree, *, tune_epochs: int = 5, learning_rate: float | None = None,
           schedule: str = "released", train_arch: bool = True, key: jax.Array | None = None,
           fns: search_steps.StepFunctions | None = None, fallback: Weights | None = None,
           ) -> tuple[Genotype, list[dict[str, Any]], PyTree]:
  """Perturbation-based selection on a trained search (``search_setup.Search``
  and its state); returns the genotype, the decision log and the tuned state.

  Between rounds (``select_core``'s ``schedule``) the supernet is tuned for
  ``tune_epochs`` epochs on the weights half of the search split (the
  released code's ``proj_intv``).  As ruocwang/darts-pt's ``pt_project``
  does, the weight optimizer is reset to momentum SGD at ``learning_rate``
  (default: the search's rate / 10) on a cosine schedule down to the
  search's minimum rate over all tuning steps, and with ``train_arch`` each
  tuning step first takes an architecture step on a batch of the
  architecture half (the search's own optimizer and state; decided and
  pruned edges get no gradient).  ``schedule="per_decision"`` with
  ``train_arch=False`` tunes the weights only, at a constant rate.
  Validation accuracies are over every full batch of the architecture half,
  with batch statistics.  ``fallback``: the weights that choose the op of a
  ``none``-only edge (``select_core``).
  """
  fns = fns or search_steps.step_functions(search)
  cfg, net, data = search.config, search.net, search.data
  wcfg, b = cfg.weight_optimizer, cfg.batch_size
  key = jax.random.key(cfg.seed + 2) if key is None else key
  k_order, k_tune = jax.random.split(key)
  masks0 = live_masks(search, state)
  mixture = lambda arch: {t: np.asarray(v, np.float32)
                          for t, v in search.mixture(arch, masks0).items()}
  u0 = mixture(state["arch"])
  masks0 = {t: np.asarray(v, bool) for t, v in masks0.items()}

  xv, yv = val_batches(search)

  lr = wcfg.learning_rate / 10 if learning_rate is None else learning_rate
  steps = len(data.train) // b
  n_rounds = num_rounds(net.space, schedule)
  if schedule == "released":
    lr = optax.cosine_decay_schedule(lr, max((n_rounds - 1) * tune_epochs * steps, 1),
                                     alpha=min(wcfg.min_learning_rate / lr, 1.0))
  tx = weight_optimizer(wcfg, lr)

  @jax.jit
  def apply_update(params, opt_state, g_params):
    g = jax.tree.map(lambda a: a / b, g_params)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  as_data = lambda split: tuple(jnp.asarray(a) for a in (split.images, split.labels, data.mean,
                                                         data.std))
  train_data, val_data = as_data(data.train), as_data(data.val)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # the architecture step donates its inputs
  tuned = {"params": state["params"], "batch_stats": state["batch_stats"],
           "opt_state": tx.init(state["params"]), "arch": copy(state["arch"]),
           "arch_opt_state": copy(state["arch_opt_state"]), "round": 0}

  def accuracy(u, masks):
    return float(fns.batch_stats_accuracy(tuned["params"], tuned["batch_stats"], _as_jax(u),
                                          _as_jax(masks), xv, yv))

  live0 = _as_jax(masks0)

  def arch_step(u_full, masks, decided, k):
    """One architecture step at the projected weights: the gradient of the
    decided and pruned edges (whose weights no longer come from ``arch``) is 0."""
    xb, yb = fns.prepare(*val_data, jax.random.choice(k, len(data.val), (b,), replace=False), k,
                         True)
    _, _, _, g_u, _ = fns.arch_grads(tuned["params"], tuned["batch_stats"], u_full, masks, xb, yb,
                                     k)
    g_u = {t: jnp.where(decided[t][:, None], 0.0, g) for t, g in g_u.items()}
    tuned["arch"], tuned["arch_opt_state"] = fns.arch_update(
        tuned["arch"], tuned["arch_opt_state"], g_u, live0, None, None)

  def tune(u, masks):
    tuned["round"] += 1
    decided = {t: jnp.asarray(m.sum(1) <= 1) for t, m in masks.items()}  # one-hot or pruned
    u, masks = _as_jax(u), _as_jax(masks)  # on the device for the whole round
    u_full = search_steps.per_copy_weights(net, u, b)
    k_round = jax.random.fold_in(k_tune, tuned["round"])
    for epoch in range(tune_epochs):
      batches = input_pipeline.epoch_batches(k_round, len(data.train), b, epoch)
      for i, idx in enumerate(batches):
        k = jax.random.fold_in(jax.random.fold_in(k_round, epoch), i)
        k_aug, k_noise, k_arch = jax.random.split(k, 3)
        if train_arch:  # the released code's order: the architecture step first
          arch_step(u_full, masks, decided, k_arch)
          # The architecture's weights on the undecided edges, the projection's elsewhere.
          u_arch = search.mixture(tuned["arch"], live0)
          u = {t: jnp.where(decided[t][:, None], u[t], u_arch[t]) for t in decided}
          u_full = search_steps.per_copy_weights(net, u, b)
        x, y = fns.prepare(*train_data, jnp.asarray(idx), k_aug, True)
        _, _, g_params, _, stats = fns.weight_grads(tuned["params"], tuned["batch_stats"],
                                                    u_full, masks, x, y, k_noise)
        tuned["params"], tuned["opt_state"] = apply_update(tuned["params"],
                                                           tuned["opt_state"], g_params)
        tuned["batch_stats"] = stats
    return mixture(tuned["arch"]) if train_arch else None

  genotype, log = select_core(net.space, u0, masks0, accuracy, tune, k_order, fallback=fallback,
                              schedule=schedule)
  return genotype, log, dict(state, params=tuned["params"], batch_stats=tuned["batch_stats"],
                             arch=tuned["arch"], arch_opt_state=tuned["arch_opt_state"])


def val_batches(search) -> tuple[jax.Array, jax.Array]:
  """Every full batch of the architecture half (the search's ``val``
  split), standardized: ``[K, B, ...]`` images and ``[K, B]`` labels."""
  data, b = search.data, search.config.batch_size
  n_val = (len(data.val) // b) * b
  xv = input_pipeline.standardize(jnp.asarray(data.val.images[:n_val]), data.mean, data.std)
  xv = xv.reshape((n_val // b, b) + xv.shape[1:])
  return xv, jnp.asarray(data.val.labels[:n_val]).reshape(n_val // b, b)


def choose_op(search, state: PyTree, fns: search_steps.StepFunctions, cell_type: str,
              edge: int) -> tuple[int, dict[str, float]]:
  """The op of one edge by perturbation (sec. 4.1), in the supernet as it is:
  the live op whose removal lowers the validation accuracy most, ``none``
  excluded where the space chooses edges.  This is DARTS-PT's operation
  decision alone, for a search that chooses its edges itself (SGAS+PT: SGAS's
  order of edges, each edge's op by perturbation when SGAS decides it).
  Returns the op and the accuracy without each candidate."""
  space = search.net.space
  live = live_masks(search, state)
  u = {t: np.asarray(v, np.float32) for t, v in search.mixture(state["arch"], live).items()
       if t in live}
  masks = {t: np.asarray(m, bool) for t, m in live.items()}
  skipped = ("none",) if space.kept_per_node else ()
  cands = [o for o in range(space.num_ops) if masks[cell_type][edge, o]
           and space.ops[o] not in skipped]
  if not cands:
    raise ValueError(f"edge {edge} of the {cell_type} cell has no live op to choose")
  xv, yv = val_batches(search)
  accs = {space.ops[o]: float(fns.batch_stats_accuracy(
      state["params"], state["batch_stats"], *map(_as_jax, removed(u, masks, cell_type,
                                                                     (edge, o))), xv, yv))
          for o in cands}
  return min(cands, key=lambda o: accs[space.ops[o]]), accs


def num_rounds(space: SearchSpace, schedule: str) -> int:
  """Decision rounds of ``select_core`` (tuning runs between them)."""
  return len(rounds(space, schedule, jax.random.key(0)))


def _as_jax(tree: Weights) -> dict[str, jax.Array]:
  return {t: jnp.asarray(v) for t, v in tree.items()}


def count_ops(genotype: Genotype, names: Sequence[str]) -> int:
  """How many of the genotype's edges (both cells) use one of ``names``."""
  return sum(op in names for op, _ in genotype.normal + genotype.reduce)
