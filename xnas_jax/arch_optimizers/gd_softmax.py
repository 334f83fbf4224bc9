"""Gradient descent with softmax (XNAS eq. 5-6): SGD on the logits, the
comparison of the XNAS paper's toy studies."""
from __future__ import annotations

import ml_collections

from xnas_jax import hypergrad
from xnas_jax import optim
from xnas_jax import arch_optimizers as registry

LEARNING_RATE = 3e-4  # when arch_optimizer.learning_rate is None

RULES = (("learning_rate", "optional_positive"),)
HYPERGRADIENTS = hypergrad.METHODS


def build(config: ml_collections.ConfigDict, shape: registry.SearchShape) -> registry.ArchOptimizer:
  del shape
  lr = config.arch_optimizer.learning_rate
  tx = optim.gd_softmax(LEARNING_RATE if lr is None else lr)
  return registry.ArchOptimizer(
      tx=registry.with_correction_as_extra_arg(tx), gradient_wrt=optim.GRADIENT_WRT_LOGITS,
      mixture=registry.softmax_mixture,
      gradient=registry.logit_gradient(registry.softmax_mixture), init_scale=1e-3,
      step_order=registry.ARCH_FIRST)
