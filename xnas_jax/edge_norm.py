"""PC-DARTS's edge normalization (Xu et al., ICLR 2020, sec. 3.2) around any
architecture optimizer.

Every edge ``(j, k)`` gets a parameter ``beta^(j,k)``; its output is weighed
by ``w^(j,k) = exp(beta^(j,k)) / sum_{j' < k} exp(beta^(j',k))``, a softmax
over the node's incoming edges (PC-DARTS eq. 4)::

    x^(k) = sum_{j<k} w^(j,k) f^(j,k)(x^(j)).

Magnitude selection then ranks a node's edges by ``w^(j,k) max_i u_i^(j,k)``
(the released ``genotype()``: ``W[j, :] *= W2[j]``).

``wrap(opt, ...)`` turns an ``ArchOptimizer`` into one whose parameters are
the inner optimizer's plus ``{"edges": {cell type: beta [E]}}``: its mixture
adds ``u["edges"] = {cell type: w [E]}`` (which ``Supernet.apply`` reads),
its gradient pulls the loss gradient w.r.t. ``w`` back to ``beta``, and its
transformation updates ``beta`` with Adam as PC-DARTS trains its betas
(together with its alphas: rate 6e-4, betas (0.5, 0.999), L2 decay 1e-3;
``config.edge_norm_optimizer``), whatever the inner optimizer does with the
experts.  For XNAS the experts' rewards stay ``R_i = -dloss/du_i``: on a
partial-channel edge ``u_i`` scales ``f_i`` on the ``C/K`` channels that the
mixed op computes, so the reward is the loss gradient at those channels
(times ``w``) dotted with the expert's output there; the bypassed channels
carry no ``u_i`` and contribute nothing to it.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xnas_jax import optim
from xnas_jax.search_space import SearchSpace

PyTree = Any
EDGES = "edges"
INIT_SCALE = 1e-3  # PC-DARTS: betas = 1e-3 * randn(num_edges)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """``config.edge_norm``; None (the default) means: with partial channels,
  as PC-DARTS searches."""
  on = config.get("edge_norm", None)
  return bool(config.get("partial_channels", 1) > 1 if on is None else on)


def node_softmax(space: SearchSpace, beta: jax.Array) -> jax.Array:
  """``w``: the softmax of ``beta`` ``[E]`` over each node's incoming edges."""
  w = jnp.zeros_like(beta)
  for dst in space.nodes:
    idx = np.asarray(space.incoming(dst))
    w = w.at[idx].set(jax.nn.softmax(beta[idx]))
  return w


def edge_weights(space: SearchSpace, beta: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """``w`` per cell type."""
  return {t: node_softmax(space, beta[t]) for t in space.cell_types}


def split(tree: PyTree | None) -> tuple[PyTree | None, PyTree | None]:
  """``(the cell types' part, the edges' part)`` of parameters, gradients or weights."""
  if tree is None:
    return None, None
  return {t: v for t, v in tree.items() if t != EDGES}, tree.get(EDGES)


class EdgeNormState(NamedTuple):
  """The wrapped optimizer's state and the betas' Adam state."""
  inner: optax.OptState
  edges: optax.OptState


def _transformation(inner: optax.GradientTransformationExtraArgs,
                    edge_tx: optax.GradientTransformation
                    ) -> optax.GradientTransformationExtraArgs:
  def init_fn(params):
    p_inner, p_edges = split(params)
    return EdgeNormState(inner.init(p_inner), edge_tx.init(p_edges))

  def update_fn(updates, state, params=None, *, correction=None, **extra):
    g_inner, g_edges = split(updates)
    p_inner, p_edges = split(params)
    c_inner, _ = split(correction)  # the edges' share is in g_edges already (``wrap``)
    u_inner, s_inner = inner.update(g_inner, state.inner, p_inner, correction=c_inner, **extra)
    u_edges, s_edges = edge_tx.update(g_edges, state.edges, p_edges)
    return dict(u_inner, **{EDGES: u_edges}), EdgeNormState(s_inner, s_edges)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def wrap(opt, space: SearchSpace, cfg: ml_collections.ConfigDict, init_inner):
  """``opt`` (an ``arch_optimizers.ArchOptimizer``) with edge normalization.

  Args:
    opt: the optimizer of the experts' mixture.
    space: the search space (which edges feed which node).
    cfg: ``config.edge_norm_optimizer`` (Adam's ``learning_rate``, ``b1``,
      ``b2``, ``weight_decay`` for the betas).
    init_inner: ``(space, key) -> params`` of ``opt``.
  """
  mixture_coords = opt.gradient_wrt == optim.GRADIENT_WRT_MIXTURE
  edge_tx = optim.darts_adam(cfg.learning_rate, cfg.b1, cfg.b2, cfg.weight_decay)

  def init_params(space_, key):
    k_inner, k_edges = jax.random.split(key)
    types = space_.cell_types
    keys = dict(zip(types, jax.random.split(k_edges, len(types))))
    return dict(init_inner(space_, k_inner), **{EDGES: {
        t: INIT_SCALE * jax.random.normal(keys[t], (space_.num_edges,), jnp.float32)
        for t in types}})

  def mixture(arch, masks, key=None, step=None):
    a_inner, beta = split(arch)
    return dict(opt.mixture(a_inner, masks, key, step), **{EDGES: edge_weights(space, beta)})

  def gradient(arch, masks, g_u, correction, key, step=None):
    """The inner optimizer's gradient, and the betas' mean-loss gradient:
    ``dloss/dw`` (per copy, summed loss -> batch mean) pulled back through
    the node softmax, plus the correction (w.r.t. ``w`` for an optimizer of
    ``u``, pulled back with it; w.r.t. ``beta`` for one of the logits)."""
    a_inner, beta = split(arch)
    g_inner, g_w = split(g_u)
    c_inner, c_edges = split(correction)
    grads = dict(opt.gradient(a_inner, masks, g_inner, c_inner, key, step))
    g_w = optim.shared_gradient(g_w)
    if c_edges is not None and mixture_coords:
      g_w = jax.tree.map(jnp.add, g_w, c_edges)
    _, vjp = jax.vjp(lambda b: edge_weights(space, b), beta)
    g_beta = vjp(g_w)[0]
    if c_edges is not None and not mixture_coords:
      g_beta = jax.tree.map(jnp.add, g_beta, c_edges)
    grads[EDGES] = g_beta
    return grads

  run_masks = None
  if opt.run_masks is not None:
    run_masks = lambda arch, masks, key, step: opt.run_masks(split(arch)[0], masks, key, step)

  return opt._replace(tx=_transformation(opt.tx, edge_tx), mixture=mixture, gradient=gradient,
                      run_masks=run_masks, init_params=init_params)
