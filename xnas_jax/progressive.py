"""DrNAS's progressive search with partial channels (Chen et al., ICLR 2021,
sec. 3.3; the release's ``DARTS-space/train_search.py``).

The search runs its first half with ``K_1 = config.partial_channels``
(6 in the release) and every operation; at the epoch boundary halfway
(``epochs // 2``, 25 of 50 there) it

1. prunes every edge to its ``keep_ops`` strongest experts by the mixture
   weights (the release's ``prune``: the top-4 concentrations, which order
   the edge as the Dirichlet mean does), which stay out of the mixture for
   the rest of the search (``Supernet.op_mask``);
2. widens the partial channels to ``K_2 = progressive.partial_channels``
   (4 there): every expert grows from ``C/K_1`` to ``C/K_2`` channels by
   copying randomly chosen existing channels of its kernels, batch
   statistics and momentum slots (the release's ``net2wider``: Net2Net's
   random replication, without rescaling the copies), one draw of channels
   per expert so that a convolution's new outputs and the next layer's new
   inputs are the same channels;
3. goes on with the same weight optimizer (its momentum widened the same
   way, its cosine schedule continuing) and the same architecture
   parameters and optimizer state.

Both changes are structural (a new ``Supernet``, one compilation); the
checkpoint metadata records them so that a resume rebuilds the same network.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xnas_jax.search_space import OP_SETS

PyTree = Any


def validate(config: ml_collections.ConfigDict, error: type) -> None:
  """The progressive section's fit with the search (its ranges are
  ``search_setup.RULES``)."""
  p = config.progressive
  if not p.enabled:
    return
  if config.channels % p.partial_channels:
    raise error(f"progressive.partial_channels {p.partial_channels} does not divide channels "
                f"{config.channels}")
  num_ops = len(OP_SETS[config.op_set])
  if p.keep_ops > num_ops:
    raise error(f"progressive.keep_ops {p.keep_ops} is more than the {num_ops} ops of op_set "
                f"{config.op_set!r}")
  if config.num_seeds > 1:
    raise error(f"progressive search with num_seeds {config.num_seeds}: its pruning is one "
                f"static structure, not one per seed; run the seeds one by one")
  if config.epochs < 2:
    raise error(f"progressive search needs epochs >= 2 (two stages), got {config.epochs}")


def switch_epoch(config: ml_collections.ConfigDict) -> int | None:
  """The number of epochs after which the second stage starts (None: no stages)."""
  p = config.progressive
  return config.epochs // 2 if p.enabled else None


def structure(net) -> dict[str, Any]:
  """What the checkpoint metadata records of a supernet's stage."""
  return {"partial_channels": net.partial_channels,
          "op_mask": None if net.op_mask is None else [[list(map(bool, e)) for e in m]
                                                       for m in net.op_mask]}


def with_structure(search, meta: dict[str, Any]):
  """``search`` over the supernet of a recorded stage (``structure``)."""
  if "partial_channels" not in meta:
    return search
  op_mask = meta.get("op_mask")
  op_mask = None if op_mask is None else tuple(tuple(tuple(e) for e in m) for m in op_mask)
  net = dataclasses.replace(search.net, partial_channels=int(meta["partial_channels"]),
                            op_mask=op_mask)
  return dataclasses.replace(search, net=net)


def prune(u: dict[str, np.ndarray], masks: dict[str, np.ndarray], keep: int,
          cell_types: tuple[str, ...]) -> tuple[tuple[tuple[bool, ...], ...], ...]:
  """Per cell type (in ``cell_types`` order), the ``keep`` live experts of
  largest ``u`` ``[E, N]`` on every edge (ties to the lower index; the
  release's ``topk``)."""
  out = []
  for t in cell_types:
    w = np.where(np.asarray(masks[t], bool), np.asarray(u[t], np.float64), -np.inf)
    kept = np.zeros(w.shape, bool)
    np.put_along_axis(kept, np.argsort(-w, axis=-1, kind="stable")[:, :keep], True, axis=-1)
    kept &= np.isfinite(w)
    out.append(tuple(tuple(map(bool, e)) for e in kept))
  return tuple(out)


def _channel_key(key: jax.Array, path) -> jax.Array:
  """One key per expert (cell, edge group, op), the same for its parameters,
  batch statistics and momentum slots wherever they sit in the state."""
  names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
  start = next((i for i, n in enumerate(names) if n.startswith("cell")), len(names))
  return jax.random.fold_in(key, zlib.crc32("/".join(names[start:start + 3]).encode()))


def widen(tree: PyTree, target: PyTree, key: jax.Array) -> PyTree:
  """``tree``'s leaves grown to ``target``'s shapes (net2wider): along every
  axis that grows, the old channels, then copies of randomly chosen ones (the
  same choice along every axis of an expert's leaves)."""
  def grow(path, old, new):
    old = jnp.asarray(old)
    if old.shape == new.shape:
      return old
    if old.ndim != len(new.shape):
      raise ValueError(f"progressive: cannot widen {jax.tree_util.keystr(path)} from "
                       f"{old.shape} to {new.shape}")
    k = _channel_key(key, path)
    for axis, (a, b) in enumerate(zip(old.shape, new.shape)):
      if a == b:
        continue
      if b < a:
        raise ValueError(f"progressive: {jax.tree_util.keystr(path)} shrinks on axis {axis}")
      idx = jax.random.randint(jax.random.fold_in(k, a), (b - a,), 0, a)
      old = jnp.concatenate([old, jnp.take(old, idx, axis=axis)], axis=axis)
    return old.astype(new.dtype)
  return jax.tree_util.tree_map_with_path(grow, tree, target)


def advance(search, state: PyTree, masks: dict[str, Any], init_state, key: jax.Array):
  """The second stage: ``(search, state, what changed)`` after pruning and
  widening (module docstring).  ``masks`` are the live experts now;
  ``init_state(search)`` gives the new search's abstract state."""
  cfg = search.config.progressive
  types = search.net.space.cell_types
  u = {t: np.asarray(v) for t, v in search.mixture(state["arch"], masks).items() if t in types}
  op_mask = prune(u, {t: np.asarray(m) for t, m in masks.items()}, cfg.keep_ops, types)
  net = dataclasses.replace(search.net, partial_channels=cfg.partial_channels, op_mask=op_mask)
  new = dataclasses.replace(search, net=net)
  abstract = jax.eval_shape(lambda: init_state(new))
  state = dict(state, **{k: widen(state[k], abstract[k], key)
                         for k in ("params", "batch_stats", "opt_state")})
  info = {"partial_channels": cfg.partial_channels, "keep_ops": cfg.keep_ops}
  return new, state, info
