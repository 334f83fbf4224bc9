"""SDARTS-RS (Chen & Hsieh, ICML 2020): DARTS (``darts_adam``) whose weight
step trains at the mixture perturbed by uniform noise of a radius growing
from ``epsilon_min`` to ``epsilon`` (``xnas_jax.sdarts``).  The same as
``darts_adam`` with ``arch_optimizer.perturb_mixture = "random"``; the name
is the paper's."""
from __future__ import annotations

from xnas_jax.arch_optimizers import darts_adam

PERTURBATION = "random"
RULES = darts_adam.RULES
HYPERGRADIENTS = darts_adam.HYPERGRADIENTS
build = darts_adam.build
