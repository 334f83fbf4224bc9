"""xnas-jax: differentiable architecture search with expert advice, in JAX."""
from xnas_jax import arch, genotype, input_pipeline, optim, search_space, supernet
from xnas_jax.genotype import Genotype, cell_depth, discretize
from xnas_jax.optim import (clip_rewards, exponentiated_gradient, regret_bound,
                            regret_optimal_learning_rate, search_horizon, wipeout,
                            WipeoutState, xnas)
from xnas_jax.choice import Choice, FixedModel, InputChoice
from xnas_jax.search_space import SearchSpace, get_search_space
from xnas_jax.supernet import Supernet


def __getattr__(name):
  """``search`` and ``fixed`` (``xnas_jax.own_model``), imported when first
  used: they bring the search loop (orbax, TensorBoard) with them."""
  if name in ("search", "fixed"):
    from xnas_jax import own_model  # pylint: disable=import-outside-toplevel
    return getattr(own_model, name)
  raise AttributeError(f"module 'xnas_jax' has no attribute {name!r}")

__version__ = "0.1.0"
