"""Uniform architecture weights that never move: the fixed-alpha supernet of
Wang et al. (DARTS-PT, sec. 5), trained for perturbation-based selection."""
from __future__ import annotations

import ml_collections
import optax

from xnas_jax import optim
from xnas_jax import arch_optimizers as registry

RULES = ()
HYPERGRADIENTS = ("first_order",)


def build(config: ml_collections.ConfigDict, shape: registry.SearchShape) -> registry.ArchOptimizer:
  del config, shape
  return registry.ArchOptimizer(
      tx=registry.with_correction_as_extra_arg(optax.set_to_zero()),
      gradient_wrt=optim.GRADIENT_WRT_LOGITS, mixture=registry.softmax_mixture,
      gradient=registry.logit_gradient(registry.softmax_mixture))
