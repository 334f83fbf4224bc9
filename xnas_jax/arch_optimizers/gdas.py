"""GDAS (Dong & Yang, CVPR 2019): one operation per edge per step, sampled
with the straight-through Gumbel-softmax, and only that one run.

Per edge and step (the released code, D-X-Y/AutoDL-Projects
``search_model_gdas.py``): Gumbel noise ``g_i = -log(E_i)``, ``E_i ~ Exp(1)``;
``p = softmax((log_softmax(a) + g) / tau)`` over the live experts; ``s =
argmax p``; the mixture weights are ``h = onehot(s) - stop_gradient(p) + p``:
their value is the one-hot sample, their gradient that of ``p``.  The
temperature falls linearly over the epochs from ``tau_max`` = 10 to
``tau_min`` = 0.1 (``tau_max - (tau_max - tau_min) * epoch / (epochs - 1)``).
Adam on the logits at 3e-4, betas (0.5, 0.999), L2 decay 1e-3 (as DARTS);
the weight step comes first, then the architecture step.

The step's forward passes run only the sampled expert of each edge
(``run_masks``): the others are skipped by the supernet's ``lax.cond``, so a
step costs about one operation per edge.  A skipped expert contributes
nothing, so ``dloss/dh_i`` is 0 for it and the logits' gradient is
``dloss/dh_s * dp_s/da``; the released code also adds the zero-valued
``h_i`` of every skipped op to the node (``sum(h_i)``), which gives those a
gradient ``sum(dloss/dx)`` that carries no information about the op; this
implementation leaves it out.  One sample per step serves both halves (the
release draws one per forward pass).  Without a key (evaluation, metrics,
magnitude selection) the mixture is ``softmax(a)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from xnas_jax import arch as arch_lib
from xnas_jax import optim
from xnas_jax import arch_optimizers as registry

LEARNING_RATE = 3e-4
TAU_MAX, TAU_MIN = 10.0, 0.1

RULES = (("learning_rate", "optional_positive"), ("b1", "unit_open"), ("b2", "unit_open"),
         ("weight_decay", "nonnegative"))
HYPERGRADIENTS = ("first_order",)
SAMPLES = True  # one expert per edge: no mixture for SDARTS to perturb


def temperature(step, steps_per_epoch: int, epochs: int, tau_max: float = TAU_MAX,
                tau_min: float = TAU_MIN):
  """GDAS's linear schedule, per epoch, from ``tau_max`` to ``tau_min``."""
  epoch = jnp.asarray(step) // steps_per_epoch
  return tau_max - (tau_max - tau_min) * epoch / max(epochs - 1, 1)


def gumbel_probs(a: jax.Array, mask: jax.Array, gumbels: jax.Array, tau) -> jax.Array:
  """``softmax((log_softmax(a) + g) / tau)`` over the live experts (0 elsewhere)."""
  logp = jnp.log(jnp.maximum(arch_lib.masked_softmax(a, mask), 1e-30))
  return arch_lib.masked_softmax((logp + gumbels) / tau, mask)


def straight_through(p: jax.Array) -> jax.Array:
  """``onehot(argmax p) - stop_gradient(p) + p``: the one-hot sample forward,
  ``p``'s gradient backward."""
  hard = jax.nn.one_hot(jnp.argmax(p, axis=-1), p.shape[-1], dtype=p.dtype)
  return hard - jax.lax.stop_gradient(p) + p


def _gumbels(key: jax.Array, shape) -> jax.Array:
  return -jnp.log(jax.random.exponential(key, shape))


def make_sampler(steps_per_epoch: int, epochs: int):
  """``(mixture, run_masks)`` of a search of ``epochs`` epochs."""

  def probs(arch, masks, key, step):
    tau = temperature(step, steps_per_epoch, epochs)
    types = sorted(masks)  # one key per cell type, in a fixed order
    keys = dict(zip(types, jax.random.split(key, len(types))))
    return {t: gumbel_probs(arch[t], masks[t], _gumbels(keys[t], arch[t].shape), tau)
            for t in types}

  def mixture(arch, masks, key=None, step=None):
    if key is None:
      return arch_lib.mixture_weights(arch, masks)
    p = probs(arch, masks, key, 0 if step is None else step)
    return {t: straight_through(v) for t, v in p.items()}

  def run_masks(arch, masks, key, step):
    p = probs(arch, masks, key, step)
    return {t: jax.nn.one_hot(jnp.argmax(v, -1), v.shape[-1], dtype=bool) & masks[t]
            for t, v in p.items()}

  return mixture, run_masks


def build(config: ml_collections.ConfigDict, shape: registry.SearchShape) -> registry.ArchOptimizer:
  acfg = config.arch_optimizer
  lr = LEARNING_RATE if acfg.learning_rate is None else acfg.learning_rate
  mixture, run_masks = make_sampler(shape.steps_per_epoch, shape.epochs)
  tx = optim.darts_adam(lr, acfg.b1, acfg.b2, acfg.weight_decay)
  return registry.ArchOptimizer(
      tx=registry.with_correction_as_extra_arg(tx), gradient_wrt=optim.GRADIENT_WRT_LOGITS,
      mixture=mixture, gradient=registry.logit_gradient(mixture), init_scale=1e-3,
      step_order=registry.WEIGHTS_FIRST, run_masks=run_masks)

