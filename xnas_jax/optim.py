"""XNAS (Nayman et al., 2019) as optax gradient transformations.

The parameters are the log-weights ``a = ln v`` of every forecaster's experts
(last axis = experts).  The *gradient* handed to these transformations is the
gradient of the loss w.r.t. the mixture weights ``u`` (not w.r.t. ``a``), so
the reward of XNAS Alg. 1, line 8 is ``R_i = -grad_p(loss) . f_i = -dloss/du_i``.

Algorithm 1, for every forecaster, becomes::

    R    <- clip(-g, -L, L)                        # clip_rewards(L)
    a    <- a + eta * R                            # exponentiated_gradient(eta)
    I_t  <- I_{t-1} \\ {i : a_i < max_{I_{t-1}} a - 2 eta L (T - t) zeta}   # wipeout

which is ``xnas(eta, L, T, zeta)``.  In log space the EG step
``v_t = v_{t-1} exp(eta R)`` (line 9) is additive, and the wipeout threshold
``theta_t = max_i v_t,i exp(-2 eta L (T - t) zeta)`` (line 11, with the
relaxation of sec. 3.2.1) is a subtraction.  A step that sums the rewards of
``k`` examples (``rewards_per_step = k``) advances ``t`` by ``k``.

References:
  Nayman et al., "XNAS: Neural Architecture Search with Expert Advice",
  NeurIPS 2019: Algorithm 1, Lemma 1-2, Theorem 1 (eq. 3), eq. 4.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any

# Which gradient the search loop must hand to each architecture optimizer.
GRADIENT_WRT_MIXTURE = "mixture_weights"  # XNAS: dloss/du
GRADIENT_WRT_LOGITS = "logits"  # DARTS, GD with softmax: dloss/da


def regret_optimal_learning_rate(num_experts: int, horizon: float, grad_bound: float) -> float:
  """``eta* = sqrt(2 ln N / (T L^2))``, the minimizer of eq. 3 without wipeout (eq. 4)."""
  if num_experts < 2:
    raise ValueError(f"num_experts must be at least 2, got {num_experts}")
  if horizon <= 0 or grad_bound <= 0:
    raise ValueError(f"horizon and grad_bound must be positive, got {horizon}, {grad_bound}")
  return math.sqrt(2.0 * math.log(num_experts) / (horizon * grad_bound ** 2))


def search_horizon(val_size: int, epochs: int, replications: int) -> int:
  """``T_c = d * E * r_c`` (sec. 3.1): rewards one forecaster of cell type ``c``
  receives in a search, with one reward per validation example, epoch and
  cell replica."""
  return int(val_size) * int(epochs) * int(replications)


def regret_bound(learning_rate: float, horizon: float, grad_bound: float, num_experts: int,
                 wipeout_factor: float = 1.0) -> float:
  """Theorem 1, eq. 3: ``eta T L^2 / 2 + ln N / eta - ln gamma_T / eta``."""
  eta, t, l = learning_rate, horizon, grad_bound
  return eta * t * l * l / 2.0 + math.log(num_experts) / eta - math.log(wipeout_factor) / eta


def clip_rewards(grad_bound: float) -> optax.GradientTransformation:
  """Enforces ``|R_i| <= L`` elementwise (the L-bounded rewards of Theorem 1)."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: jnp.clip(g, -grad_bound, grad_bound), updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def per_copy_rewards(grad_bound: float) -> optax.GradientTransformationExtraArgs:
  """Theorem 1's L-bounded rewards, one per validation example and cell replica.

  The search feeds XNAS the gradient w.r.t. a copy of the mixture weights per
  cell replica and example, ``g`` of shape ``[R, B, E, N]`` (sec. 3.1: every
  such copy is one round of the forecaster, ``T_c = d E r_c``).  Each copy's
  ``g + correction / R`` is clipped to ``[-L, L]`` and the copies are summed,
  so one update accounts for ``R B`` rounds (``wipeout(rewards_per_step=R B)``).

  ``correction`` (extra argument, shape ``[E, N]``, at the scale of the mean
  loss over the batch) is what a hypergradient estimator adds to the first
  order gradient; split evenly over the ``R`` replicas, the copies' summed
  rewards carry the batch's hypergradient at the scale of the summed loss.
  """
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, correction=None, **extra_args):
    del params, extra_args
    if correction is None:
      correction = jax.tree.map(lambda g: jnp.zeros(g.shape[2:], g.dtype), updates)
    clipped = jax.tree.map(
        lambda g, c: jnp.sum(jnp.clip(g + c / g.shape[0], -grad_bound, grad_bound), axis=(0, 1)),
        updates, correction)
    return clipped, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def shared_gradient(g_copies: PyTree) -> PyTree:
  """Per-copy gradients of the summed loss ``[R, B, E, N]`` -> the gradient of
  the batch's mean loss w.r.t. the shared mixture weights ``[E, N]`` (summed
  over the ``R`` replicas, averaged over the ``B`` examples)."""
  return jax.tree.map(lambda g: jnp.sum(g, axis=(0, 1)) / g.shape[1], g_copies)


def batch_mean_rewards() -> optax.GradientTransformationExtraArgs:
  """One round per step: the per-copy gradients ``[R, B, E, N]`` of the
  summed loss become the gradient of the batch's mean loss w.r.t. the shared
  mixture weights (summed over replicas), plus ``correction`` (extra argument,
  mean-loss scale).  Chain ``clip_rewards(R L)`` after it: the summed reward
  of ``R`` replicas is bounded by ``R L``."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, correction=None, **extra_args):
    del params, extra_args
    g = shared_gradient(updates)
    if correction is not None:
      g = jax.tree.map(jnp.add, g, correction)
    return g, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def exponentiated_gradient(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """The EG step of Alg. 1, line 9, in log space: ``a <- a + eta * R = a - eta * g``.

  Args:
    learning_rate: ``eta``, a scalar or an optax schedule of the step count.

  Returns:
    An ``optax.GradientTransformation`` mapping ``g = dloss/du`` to ``-eta g``.
  """
  if callable(learning_rate):
    return optax.scale_by_schedule(lambda count: -learning_rate(count))
  return optax.scale(-learning_rate)


class WipeoutState(NamedTuple):
  """State of ``wipeout``."""
  count: chex.Array  # [] int32: rounds t seen so far (rewards per forecaster)
  mask: PyTree  # like params, bool: experts still active (I_t)


def wipeout(learning_rate: float, grad_bound: float, horizon: float, zeta: float = 1.0,
            rewards_per_step: int = 1,
            initial_mask: PyTree | None = None) -> optax.GradientTransformation:
  """Wipes out experts that can no longer lead (Alg. 1, lines 11-12).

  After the update, expert ``i`` of a forecaster is switched off for good if
  ``a_i < max_{j in I_{t-1}} a_j - 2 eta L (T - t) zeta``, the log of
  ``v_i < theta_t = max_j v_j exp(-2 eta L (T - t) zeta)``, where ``t`` is the
  round reached after this step.  Updates of switched-off experts are zeroed,
  so their log-weights freeze and they never return.  By Lemma 1 the best
  expert in hindsight is never wiped out when ``zeta = 1`` and the rewards are
  ``L``-bounded.

  Args:
    learning_rate: ``eta`` of the EG step (a scalar; the threshold is the
      theory's, which assumes a constant rate).
    grad_bound: ``L``.
    horizon: ``T``, total rounds of the search (``search_horizon``).
    zeta: relaxation ``0 < zeta <= 1`` (sec. 3.2.1); below 1 wipes earlier
      and voids the regret guarantee.
    rewards_per_step: rounds one update accounts for (batch size x cell
      replicas when per-example rewards are summed).
    initial_mask: optional pytree of bools like params: experts that exist
      (the per-edge op sets of space S1); all by default.

  Returns:
    An ``optax.GradientTransformation`` with state ``WipeoutState``.
  """
  def init_fn(params):
    if initial_mask is None:
      mask = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    # jnp.array copies: the state must not alias ``initial_mask``, or donating
    # the state to a jitted update would delete the transformation's own mask.
    elif isinstance(initial_mask, (jax.Array, np.ndarray)):  # one mask for every leaf
      mask = jax.tree.map(lambda p: jnp.array(jnp.broadcast_to(initial_mask, p.shape), bool),
                          params)
    else:
      mask = jax.tree.map(lambda p, m: jnp.array(jnp.broadcast_to(m, p.shape), bool),
                          params, initial_mask)
    return WipeoutState(count=jnp.zeros([], jnp.int32), mask=mask)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("wipeout needs params: call update(updates, state, params)")
    count = state.count + jnp.asarray(rewards_per_step, jnp.int32)
    remaining = jnp.maximum(jnp.asarray(horizon, jnp.float32) - count.astype(jnp.float32), 0.0)
    log_gap = 2.0 * learning_rate * grad_bound * remaining * zeta

    def keep(u, p, m):
      new = p + jnp.where(m, u, 0.0)
      lead = jnp.max(jnp.where(m, new, -jnp.inf), axis=-1, keepdims=True)
      return m & (new >= lead - log_gap)

    new_updates = jax.tree.map(lambda u, m: jnp.where(m, u, 0.0), updates, state.mask)
    new_mask = jax.tree.map(keep, updates, params, state.mask)
    return new_updates, WipeoutState(count=count, mask=new_mask)

  return optax.GradientTransformation(init_fn, update_fn)


def xnas(learning_rate: float, grad_bound: float, horizon: float, zeta: float = 1.0,
         rewards_per_step: int = 1,
         initial_mask: PyTree | None = None) -> optax.GradientTransformation:
  """XNAS (Alg. 1): ``clip_rewards(k L)``, ``exponentiated_gradient(eta)``, ``wipeout``.

  Feed it ``g = dloss/du`` summed over ``k = rewards_per_step`` rounds, each
  already clipped at ``L`` (so the sum is bounded by ``k L``; with ``k = 1``
  this is the plain clip at ``L``), and apply the result to the log-weights with
  ``optax.apply_updates``.  Works under ``optax.inject_hyperparams`` and
  inside ``optax.multi_transform`` (one rate per cell type, sec. 3.1).

  Example:
    >>> tx = xnas(learning_rate=7.5e-4, grad_bound=1.0, horizon=7_500_000)
    >>> state = tx.init(log_weights)
    >>> updates, state = tx.update(grad_wrt_u, state, log_weights)
    >>> log_weights = optax.apply_updates(log_weights, updates)
    >>> optax.tree_utils.tree_get(state, "mask")  # active experts
  """
  return optax.chain(
      clip_rewards(grad_bound * rewards_per_step),
      exponentiated_gradient(learning_rate),
      wipeout(learning_rate, grad_bound, horizon, zeta, rewards_per_step, initial_mask),
  )


def gd_softmax(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """Gradient descent on the logits (``a <- a - eta dloss/da``, XNAS eq. 5-6).

  Feed it the gradient w.r.t. the logits.
  """
  return optax.sgd(learning_rate)


def darts_adam(learning_rate: float = 3e-4, b1: float = 0.5, b2: float = 0.999,
               weight_decay: float = 1e-3) -> optax.GradientTransformation:
  """DARTS's architecture optimizer: Adam with L2 weight decay added to the
  gradient (PyTorch ``Adam(weight_decay=...)``, not AdamW).  Feed it the
  gradient w.r.t. the logits."""
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
                     optax.scale(-learning_rate))


def darts_sgd(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9,
              weight_decay: float = 3e-4, grad_clip: float = 5.0,
              nesterov: bool = False) -> optax.GradientTransformation:
  """DARTS's weight optimizer (search and retraining): the gradient clipped
  to global norm ``grad_clip``, L2 decay added to it, momentum SGD."""
  return optax.chain(optax.clip_by_global_norm(grad_clip),
                     optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def active_mask(state: optax.OptState) -> PyTree | None:
  """The wipeout mask inside a (possibly nested) optimizer state, or ``None``.

  Masks of several ``wipeout`` transformations (one per ``optax.partition``
  label) are merged into one tree: each part comes from the member that
  owns it (the others hold ``optax.MaskedNode`` there).
  """
  found = [m for _, m in optax.tree_utils.tree_get_all_with_path(state, "mask")]
  if not found:
    return None
  masked = lambda x: isinstance(x, optax.MaskedNode)

  def merge(*parts):
    owned = [p for p in parts if not masked(p)]
    return owned[0] if owned else optax.MaskedNode()
  return jax.tree.map(merge, *found, is_leaf=masked)
