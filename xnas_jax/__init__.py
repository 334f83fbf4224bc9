"""xnas-jax: differentiable architecture search with expert advice, in JAX."""
from xnas_jax import arch, genotype, input_pipeline, optim, search_space, supernet
from xnas_jax.genotype import Genotype, cell_depth, discretize
from xnas_jax.optim import (clip_rewards, exponentiated_gradient, regret_bound,
                            regret_optimal_learning_rate, search_horizon, wipeout,
                            WipeoutState, xnas)
from xnas_jax.search_space import SearchSpace, get_search_space
from xnas_jax.supernet import Supernet

__version__ = "0.1.0"
