"""DrNAS (Chen et al., 2021): Dirichlet mixture weights (``xnas_jax.drnas``)
with Adam on the concentration parameters, as the released code runs it
(xiangning-chen/DrNAS, ``DARTS-space/train_search.py`` and ``architect.py``):

* Adam at 6e-4 with betas (0.5, 0.999) (``arch_optimizer.learning_rate``
  None takes 6e-4);
* one regularizer, ``reg_type``: ``"l2"`` (the released default) is Adam's
  L2 decay at ``reg_scale``; ``"kl"`` adds ``reg_scale KL(Dir(beta) || Dir(prior))``
  to the architecture loss with no decay;
* architecture steps start after a warm-up of weight steps only, 10 of the
  released 50 epochs (``warmup_epochs`` None: a fifth of ``config.epochs``);
* the architecture step comes before the weight step.
"""
from __future__ import annotations

import ml_collections

from xnas_jax import drnas
from xnas_jax import optim
from xnas_jax import arch_optimizers as registry

LEARNING_RATE = 6e-4
WARMUP_FRACTION = 10 / 50  # the released loop: `if epoch >= 10: architect.step(...)`
REG_TYPES = ("l2", "kl")

RULES = (("learning_rate", "optional_positive"), ("b1", "unit_open"), ("b2", "unit_open"),
         ("reg_scale", "nonnegative"), ("prior", "positive"))
CHOICES = (("reg_type", REG_TYPES),)
HYPERGRADIENTS = ("first_order",)


def mixture(arch, masks, key=None, step=None):
  """A ``Dir(beta)`` sample with ``key``, the Dirichlet mean without."""
  del step
  return drnas.mean_weights(arch, masks) if key is None else drnas.sample_weights(key, arch, masks)


def build(config: ml_collections.ConfigDict, shape: registry.SearchShape) -> registry.ArchOptimizer:
  acfg = config.arch_optimizer
  lr = LEARNING_RATE if acfg.learning_rate is None else acfg.learning_rate
  l2 = acfg.reg_type == "l2"
  tx = optim.darts_adam(lr, acfg.b1, acfg.b2, acfg.reg_scale if l2 else 0.0)
  regularizer = None if l2 else (lambda arch: acfg.reg_scale * drnas.kl_regularizer(arch,
                                                                                   acfg.prior))
  return registry.ArchOptimizer(
      tx=registry.with_correction_as_extra_arg(tx), gradient_wrt=optim.GRADIENT_WRT_LOGITS,
      mixture=mixture, gradient=registry.logit_gradient(mixture, regularizer), init_scale=1e-3,
      step_order=registry.ARCH_FIRST, warmup_epochs=int(round(WARMUP_FRACTION * shape.epochs)))
