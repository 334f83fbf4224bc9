"""Exponentiated gradient without wipeout: XNAS's update (Alg. 1, line 9) on
the same rewards, rates and bounds, with every expert kept to the end (the
ablation of lines 11-12).  It reads XNAS's config keys."""
from __future__ import annotations

import ml_collections
import optax

from xnas_jax import hypergrad
from xnas_jax import optim
from xnas_jax import arch_optimizers as registry
from xnas_jax.arch_optimizers import xnas

RULES = xnas.RULES
HYPERGRADIENTS = hypergrad.METHODS


def build(config: ml_collections.ConfigDict, shape: registry.SearchShape) -> registry.ArchOptimizer:
  th = xnas.theory(config, shape)
  txs = {t: optax.chain(th.rewards[t], optim.exponentiated_gradient(th.rates[t]))
         for t in shape.space.cell_types}
  return registry.ArchOptimizer(
      tx=optax.partition(txs, {t: t for t in txs}, mask_compatible_extra_args=True),
      gradient_wrt=optim.GRADIENT_WRT_MIXTURE, mixture=registry.softmax_mixture,
      gradient=xnas.identity_gradient, learning_rates=th.rates,
      rewards_per_step=th.rewards_per_step, horizons=th.horizons, reward_bounds=th.bounds)
