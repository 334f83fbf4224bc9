"""SGAS (Li et al., CVPR 2020): DARTS (``darts_adam``: Adam on the logits,
the architecture step first) with SGAS's greedy edge decisions chained
after it (``xnas_jax.sgas``).  Keys: ``decision_start_epoch`` (the
release's 9), ``decision_interval`` (5), ``sgas_criterion`` (1, or 2 with
``history_size`` epochs of selection stability).  The release searches
``start + interval * (edges to decide - 1) + 6`` epochs (50 on the DARTS
cell); edges left undecided when the search ends are chosen by the
selection method.  With ``config.selection = "perturbation"`` SGAS chooses
the edges and perturbation their ops, at each decision (DARTS-PT's SGAS+PT:
``sgas.settle``, ``perturbation.choose_op``)."""
from __future__ import annotations

import ml_collections
import optax

from xnas_jax import edge_norm
from xnas_jax import hypergrad
from xnas_jax import optim
from xnas_jax import sgas
from xnas_jax import arch_optimizers as registry
from xnas_jax.arch_optimizers import darts_adam

RULES = darts_adam.RULES + (("decision_start_epoch", "nonnegative_int"),
                            ("decision_interval", "positive_int"),
                            ("history_size", "positive_int"))
CHOICES = (("sgas_criterion", (1, 2)),)
HYPERGRADIENTS = hypergrad.METHODS


def check(config: ml_collections.ConfigDict, error: type) -> None:
  """SGAS reads edge importance from the ops' weights alone: PC-DARTS's edge
  normalization, which weighs edges by betas the scores do not see, is refused."""
  if edge_norm.enabled(config):
    raise error("arch_optimizer 'sgas' cannot use PC-DARTS's edge normalization (edge_norm, "
                "on with partial_channels > 1): its scores do not see the edges' betas")


def build(config: ml_collections.ConfigDict, shape: registry.SearchShape) -> registry.ArchOptimizer:
  acfg = config.arch_optimizer
  lr = darts_adam.LEARNING_RATE if acfg.learning_rate is None else acfg.learning_rate
  defers = config.get("selection") == "perturbation"
  tx = optax.chain(
      optim.darts_adam(lr, acfg.b1, acfg.b2, acfg.weight_decay),
      sgas.decisions(shape.space, shape.default_masks, shape.steps_per_epoch,
                     acfg.decision_start_epoch, acfg.decision_interval, acfg.sgas_criterion,
                     acfg.history_size, choose_op=not defers))
  return registry.ArchOptimizer(
      tx=registry.with_correction_as_extra_arg(tx), gradient_wrt=optim.GRADIENT_WRT_LOGITS,
      mixture=registry.softmax_mixture,
      gradient=registry.logit_gradient(registry.softmax_mixture), init_scale=1e-3,
      step_order=registry.ARCH_FIRST,
      pending_ops=sgas.pending if defers else None,
      settle_op=sgas.settle if defers else None)
