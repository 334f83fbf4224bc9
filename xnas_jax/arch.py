"""Architecture parameters and the mixture weights they induce.

Both DARTS and XNAS keep one real parameter per expert, ``a``: DARTS calls it
the logit ``alpha``, XNAS the log-weight ``a = ln v``.  The mixture weights are
the normalized weights of the live experts (XNAS eq. 1)::

    u_i = v_i / sum_{l live} v_l = softmax(a)_i over the live experts.

The difference between the methods is the gradient they take: DARTS (and GD
with softmax) differentiates the loss w.r.t. ``a`` through the softmax; XNAS
uses the gradient w.r.t. ``u`` itself, whose negation is the reward
``R_i = -grad_p(loss) . f_i`` (XNAS Alg. 1, line 8).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from xnas_jax.search_space import SearchSpace

ArchParams = dict[str, jax.Array]  # per cell type [E, N]: {"normal": ..., "reduce": ...} in DARTS


def init_arch_params(space: SearchSpace, key: jax.Array | None = None,
                     scale: float = 0.0) -> ArchParams:
  """Zeros (uniform mixture; XNAS Alg. 1 line 2: v_0 = 1), or DARTS's
  ``1e-3 * N(0, 1)`` when ``scale`` and ``key`` are given."""
  shape = (space.num_edges, space.num_ops)
  types = space.cell_types
  if key is None or scale == 0.0:
    return {t: jnp.zeros(shape, jnp.float32) for t in types}
  keys = jax.random.split(key, len(types))
  return {t: scale * jax.random.normal(k, shape, jnp.float32) for t, k in zip(types, keys)}


def mixture_weights(arch: ArchParams, masks: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """``u = softmax(a)`` over the live experts; wiped experts get exactly 0.

  Uses the double ``where`` so that no ``-inf`` or ``nan`` reaches a gradient
  through a wiped entry.
  """
  return {t: masked_softmax(arch[t], m) for t, m in masks.items()}


def masked_softmax(a: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis where ``mask``; exactly 0 elsewhere (all 0
  where no expert is live), and no ``-inf`` or ``nan`` in the gradient (the
  double ``where``)."""
  safe = jnp.where(mask, a, 0.0)
  shifted = safe - jnp.max(jnp.where(mask, safe, -jnp.inf), axis=-1, keepdims=True)
  e = jnp.where(mask, jnp.exp(jnp.where(mask, shifted, 0.0)), 0.0)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(total > 0, total, 1.0)  # an edge with no live expert (SGAS's pruned): 0


def normalized_entropy(u: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Mean normalized entropy of the forecasters' weights (XNAS eq. 54-55).

  ``H_bar = -1/ln N sum_i u_i ln u_i`` per forecaster (eq. 54), averaged over
  the forecasters (eq. 55).  ``u`` is ``[num_edges, N]``; ``0 ln 0 = 0``.
  """
  n = u.shape[-1]
  if n < 2:
    return jnp.zeros(())
  plogp = jnp.where(u > eps, u * jnp.log(jnp.where(u > eps, u, 1.0)), 0.0)
  return jnp.mean(-jnp.sum(plogp, axis=-1) / jnp.log(n))
