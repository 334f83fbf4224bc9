"""DrNAS (Chen et al., 2021): Dirichlet mixture weights (``xnas_jax.drnas``)
with Adam on the concentration parameters; the architecture step first."""
from __future__ import annotations

import ml_collections

from xnas_jax import drnas
from xnas_jax import optim
from xnas_jax import arch_optimizers as registry

RULES = (("learning_rate", "positive"), ("b1", "unit_open"), ("b2", "unit_open"),
         ("weight_decay", "nonnegative"), ("reg_scale", "nonnegative"), ("prior", "positive"))
HYPERGRADIENTS = ("first_order",)


def mixture(arch, masks, key=None):
  """A ``Dir(beta)`` sample with ``key``, the Dirichlet mean without."""
  return drnas.mean_weights(arch, masks) if key is None else drnas.sample_weights(key, arch, masks)


def build(config: ml_collections.ConfigDict, shape: registry.SearchShape) -> registry.ArchOptimizer:
  del shape
  acfg = config.arch_optimizer
  tx = optim.darts_adam(acfg.learning_rate, acfg.b1, acfg.b2, acfg.weight_decay)
  regularizer = lambda arch: acfg.reg_scale * drnas.kl_regularizer(arch, acfg.prior)
  return registry.ArchOptimizer(
      tx=registry.with_correction_as_extra_arg(tx), gradient_wrt=optim.GRADIENT_WRT_LOGITS,
      mixture=mixture, gradient=registry.logit_gradient(mixture, regularizer), init_scale=1e-3)
