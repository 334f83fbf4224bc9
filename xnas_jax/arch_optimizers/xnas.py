"""XNAS (Nayman et al., 2019): exponentiated gradient with wipeout on the
log-weights, fed the rewards ``R_i = -dloss/du_i`` (Alg. 1), one
``optax.partition`` member per cell type with its own eta and T (sec. 3.1).

With ``per_example_rewards`` (the default), every validation example and
cell replica is a round with its own L-bounded reward (``optim.per_copy_rewards``):
``T_c = d E r_c``.  Otherwise one round per step whose reward sums the
``r_c`` replicas' batch means, bounded by ``r_c L``: ``T_c`` = steps x epochs.
eta per cell type is eq. 4's ``sqrt(2 ln N / (T_c L_c^2))`` with ``N`` the
experts each forecaster of that cell type has (2 per edge in space S1),
unless ``learning_rate_<cell type>`` is set.
"""
from __future__ import annotations

from typing import NamedTuple

import ml_collections
import optax

from xnas_jax import hypergrad
from xnas_jax import optim
from xnas_jax.arch_optimizers import ArchOptimizer, SearchShape, softmax_mixture

RULES = (("grad_bound", "positive"), ("zeta", "unit_closed"),
         ("learning_rate_normal", "optional_positive"),
         ("learning_rate_reduce", "optional_positive"), ("per_example_rewards", "bool"))
HYPERGRADIENTS = hypergrad.METHODS


class Theory(NamedTuple):
  """Sec. 3.1's quantities per cell type: eta, rounds per step, T and L, and
  the reward transformation that turns per-copy gradients into rewards."""
  rates: dict[str, float]
  rewards_per_step: dict[str, int]
  horizons: dict[str, int]
  bounds: dict[str, float]
  rewards: dict[str, optax.GradientTransformationExtraArgs]


def theory(config: ml_collections.ConfigDict, shape: SearchShape) -> Theory:
  """eta, T, L and the rewards of each cell type (module docstring)."""
  acfg = config.arch_optimizer
  per_example = acfg.per_example_rewards
  out = Theory({}, {}, {}, {}, {})
  for t in shape.space.cell_types:
    r = shape.replicas[t]
    out.rewards_per_step[t] = shape.batch_size * r if per_example else 1
    out.bounds[t] = acfg.grad_bound if per_example else acfg.grad_bound * max(r, 1)
    out.horizons[t] = (optim.search_horizon(shape.steps_per_epoch * shape.batch_size,
                                            shape.epochs, r)
                       if per_example else shape.steps_per_epoch * shape.epochs)
    n = int(shape.space.available_mask(t).sum(axis=1).max())  # N of eq. 4
    lr = acfg.get(f"learning_rate_{t}", None)
    out.rates[t] = float(lr) if lr is not None else optim.regret_optimal_learning_rate(
        n, max(out.horizons[t], 1), out.bounds[t])
    out.rewards[t] = (optim.per_copy_rewards(acfg.grad_bound) if per_example else
                      optax.chain(optim.batch_mean_rewards(), optim.clip_rewards(out.bounds[t])))
  return out


def identity_gradient(arch, masks, g_u, correction, key, step=None):
  """XNAS consumes the per-copy ``dloss/du`` itself (its rewards)."""
  del arch, masks, correction, key, step
  return g_u


def build(config: ml_collections.ConfigDict, shape: SearchShape) -> ArchOptimizer:
  acfg, th = config.arch_optimizer, theory(config, shape)
  txs = {t: optax.chain(th.rewards[t], optim.exponentiated_gradient(th.rates[t]),
                        optim.wipeout(th.rates[t], th.bounds[t], th.horizons[t], acfg.zeta,
                                      th.rewards_per_step[t], initial_mask=shape.default_masks[t]))
         for t in shape.space.cell_types}
  tx = optax.partition(txs, {t: t for t in txs}, mask_compatible_extra_args=True)
  return ArchOptimizer(tx=tx, gradient_wrt=optim.GRADIENT_WRT_MIXTURE, mixture=softmax_mixture,
                       gradient=identity_gradient, learning_rates=th.rates,
                       rewards_per_step=th.rewards_per_step, horizons=th.horizons,
                       reward_bounds=th.bounds, zeta=acfg.zeta)
