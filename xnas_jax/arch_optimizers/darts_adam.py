"""DARTS (Liu et al., 2019): Adam on the softmax logits, betas (0.5, 0.999),
L2 decay added to the gradient, logits starting at ``1e-3 N(0, 1)``; the
architecture step comes before the weight step (DARTS Alg. 1).  The rate is
``arch_optimizer.learning_rate``, 3e-4 when None."""
from __future__ import annotations

import ml_collections

from xnas_jax import hypergrad
from xnas_jax import optim
from xnas_jax import arch_optimizers as registry

LEARNING_RATE = 3e-4  # DARTS's train_search.py

RULES = (("learning_rate", "optional_positive"), ("b1", "unit_open"), ("b2", "unit_open"),
         ("weight_decay", "nonnegative"))
HYPERGRADIENTS = hypergrad.METHODS


def build(config: ml_collections.ConfigDict, shape: registry.SearchShape) -> registry.ArchOptimizer:
  del shape
  acfg = config.arch_optimizer
  lr = LEARNING_RATE if acfg.learning_rate is None else acfg.learning_rate
  tx = optim.darts_adam(lr, acfg.b1, acfg.b2, acfg.weight_decay)
  return registry.ArchOptimizer(
      tx=registry.with_correction_as_extra_arg(tx), gradient_wrt=optim.GRADIENT_WRT_LOGITS,
      mixture=registry.softmax_mixture,
      gradient=registry.logit_gradient(registry.softmax_mixture), init_scale=1e-3,
      step_order=registry.ARCH_FIRST)
