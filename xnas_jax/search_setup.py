"""Building a search: its config checks, network, optimizers, data and state.

``build_search(config) -> Search`` holds everything static about a search;
``init_state(search, key)`` its state, a plain pytree of arrays (what is
checkpointed).  The architecture optimizer comes from the registry in
``xnas_jax.arch_optimizers``; nothing here tests its name.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from xnas_jax import arch as arch_lib
from xnas_jax import arch_optimizers
from xnas_jax import budget
from xnas_jax import config_checks
from xnas_jax import edge_norm
from xnas_jax import hypergrad
from xnas_jax import input_pipeline
from xnas_jax import ops as ops_lib
from xnas_jax import optim
from xnas_jax import parallel
from xnas_jax import progressive
from xnas_jax import rebuild as rebuild_lib
from xnas_jax import spaces
from xnas_jax.supernet import Supernet

PyTree = Any
ConfigError = config_checks.ConfigError

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# The range of every numeric and boolean key of the search's own sections
# (the architecture optimizer and hypergradient sections are checked by
# arch_optimizers and hypergrad; the selection's by selection).
RULES = (
    ("limit", "nonnegative_int"), ("seed", "nonnegative_int"), ("num_seeds", "positive_int"),
    ("channels", "positive_int"), ("num_cells", "positive_int"), ("batch_size", "positive_int"),
    ("num_devices", "nonnegative_int"), ("epochs", "positive_int"), ("rebuild_wiped", "bool"),
    ("tensorboard", "bool"), ("figures", "bool"),
    ("augment.pad", "nonnegative_int"), ("augment.flip", "bool"),
    ("weight_optimizer.learning_rate", "positive"),
    ("weight_optimizer.min_learning_rate", "nonnegative"),
    ("weight_optimizer.momentum", "unit_open"), ("weight_optimizer.weight_decay", "nonnegative"),
    ("weight_optimizer.grad_clip", "positive"),
    ("partial_channels", "positive_int"), ("edge_norm", "optional_bool"),
    ("edge_norm_optimizer.learning_rate", "positive"), ("edge_norm_optimizer.b1", "unit_open"),
    ("edge_norm_optimizer.b2", "unit_open"), ("edge_norm_optimizer.weight_decay", "nonnegative"),
    ("progressive.enabled", "bool"), ("progressive.partial_channels", "positive_int"),
    ("progressive.keep_ops", "positive_int"),
)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` naming the first bad value of the sections a
  search is built from."""
  choose = lambda key, choices: config_checks.check_choice(config, key, choices, ConfigError)
  if input_pipeline.dataset_error(config.dataset):
    raise ConfigError(input_pipeline.dataset_error(config.dataset))
  spaces.validate(config, ConfigError)
  choose("compute_dtype", COMPUTE_DTYPES)
  choose("depthwise_impl", ops_lib.DEPTHWISE_IMPLS)
  choose("arch_grads_program", ARCH_GRADS_PROGRAMS)
  if config.depthwise_impl == "shifted" and config.arch_gradient in hypergrad.CORRECTIONS:
    raise ConfigError(f"depthwise_impl='shifted' has no forward-mode derivative, which "
                      f"arch_gradient={config.arch_gradient!r} needs; use 'auto', 'grouped' "
                      f"or 'dense'")
  config_checks.check(config, RULES, ConfigError)
  hypergrad.validate(config, ConfigError)
  arch_optimizers.validate(config, ConfigError)
  budget.validate(config, ConfigError)
  progressive.validate(config, ConfigError)
  k = config.partial_channels
  if config.channels % k:
    raise ConfigError(f"partial_channels {k} does not divide channels {config.channels} "
                      f"(each expert sees channels / partial_channels of them)")
  if (k > 1 or edge_norm.enabled(config)) and config.selection == "perturbation":
    raise ConfigError(f"selection 'perturbation' is not available with partial_channels {k} "
                      f"or edge_norm: it removes an edge by masking its experts, which leaves "
                      f"a partial-channel edge's bypassed channels and its edge weight in place")
  device_error = parallel.device_config_error(config.num_devices, config.batch_size)
  if device_error:
    raise ConfigError(device_error)


@dataclasses.dataclass(frozen=True)
class Search:
  """Everything static about a search: network, optimizers, data, schedule."""
  config: ml_collections.ConfigDict
  net: Supernet
  data: input_pipeline.SearchData
  weight_tx: optax.GradientTransformation
  arch_opt: arch_optimizers.ArchOptimizer
  steps_per_epoch: int
  costs: budget.EdgeCosts | None = None  # the budget's cost model (None: no budget)

  def mixture(self, arch: PyTree, masks: dict[str, jax.Array],
              key: jax.Array | None = None, step: jax.Array | None = None
              ) -> dict[str, jax.Array]:
    """The mixture weights ``u`` of architecture parameters ``arch``."""
    return self.arch_opt.mixture(arch, masks, key, step)

  def weight_learning_rate(self, step: int) -> float:
    """The weight optimizer's learning rate at ``step``."""
    return float(weight_schedule(self.config.weight_optimizer,
                                 self.steps_per_epoch * self.config.epochs)(step))


def depthwise_impl(config: ml_collections.ConfigDict) -> str:
  """``config.depthwise_impl``, where "auto" keeps XLA's grouped convolution
  for the second-order hypergradients: their programs take a jvp of the
  supernet's gradient, which the shifted form's ``custom_vjp``
  (``shifted_ops``) does not have, and its k*k slices, differentiated twice,
  take XLA:CPU many times longer to compile than grouped convolutions."""
  if config.depthwise_impl == "auto" and config.arch_gradient in hypergrad.CORRECTIONS:
    return "grouped"
  return config.depthwise_impl


ARCH_GRADS_PROGRAMS = ("auto", "shared", "separate")
# A first-order architecture step that differentiates the mixture weights only
# skips the weights' gradients (the depthwise kernels' reductions, the 1x1
# convolutions' kernel products), and a weight step that differentiates the
# weights only skips the per-example rewards.  The second program costs one
# more compilation, which a CIFAR-10-sized search repays within tens of steps
# and a digits-sized one does not (benchmarks/search_step.py, compile_time.py).
STEP_PROGRAMS_MIN_STEPS = 1000


def separate_step_programs(config: ml_collections.ConfigDict, steps_per_epoch: int) -> bool:
  """Whether the weight and architecture steps get a gradient program each
  (``config.arch_grads_program``).  Never with a hypergradient correction,
  which needs the validation batch's weight gradient."""
  if config.arch_gradient in hypergrad.CORRECTIONS or config.arch_grads_program == "shared":
    return False
  return (config.arch_grads_program == "separate"
          or steps_per_epoch * config.epochs >= STEP_PROGRAMS_MIN_STEPS)


def weight_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """DARTS's cosine schedule of the weight learning rate."""
  return optax.cosine_decay_schedule(
      cfg.learning_rate, max(total_steps, 1), alpha=cfg.min_learning_rate / cfg.learning_rate)


def weight_optimizer(cfg: ml_collections.ConfigDict,
                     learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """DARTS's weight optimizer: clip, L2 decay, momentum SGD (search, DARTS-PT's tuning)."""
  return optim.darts_sgd(learning_rate, cfg.momentum, cfg.weight_decay, cfg.grad_clip)


def remat_edges(config: ml_collections.ConfigDict) -> bool:
  """Whether the supernet's edge scans recompute their forward in the
  backward pass (``SearchCell.remat``): yes for first-order searches, where it
  makes the step faster on a CPU; no for the second-order hypergradients, whose
  twice-differentiated programs were measured and tested without it (their
  compile time and memory with it are not measured yet)."""
  return config.arch_gradient not in hypergrad.CORRECTIONS


def build_search(config: ml_collections.ConfigDict) -> Search:
  """Validates the config, loads the data and builds network and optimizers."""
  validate_config(config)
  family = spaces.get(config.get("space", "darts"))
  data = input_pipeline.load_search_data(config.dataset, config.seed, data_dir=config.data_dir or None,
                                         limit=config.get("limit", 0))
  try:
    space = family.make_space(config, data.image_shape, data.num_classes)
  except ValueError as e:  # a model that cannot be searched (space 'model')
    raise ConfigError(str(e)) from None
  size_error = family.image_size_error(data.image_shape, config.num_cells)
  if size_error:
    raise ConfigError(f"{config.dataset}: {size_error}")
  b = config.batch_size
  if b > len(data.train) or b > len(data.val):
    raise ConfigError(f"batch_size {b} is larger than the data "
                      f"({len(data.train)} train / {len(data.val)} val examples)")
  net = family.supernet(space, config, data.num_classes, depthwise_impl=depthwise_impl(config),
                        remat=remat_edges(config), partial_channels=config.partial_channels)
  steps = min(len(data.train), len(data.val)) // b
  shape = arch_optimizers.SearchShape(space, dict(net.replicas), net.default_masks(), b, steps,
                                      config.epochs)
  weight_tx = weight_optimizer(config.weight_optimizer,
                               weight_schedule(config.weight_optimizer, steps * config.epochs))
  costs = budget.build(config, space, data.image_shape, data.num_classes)
  return Search(config, net, data, weight_tx, arch_optimizers.build(config, shape), steps, costs)


def init_state(search: Search, key: jax.Array) -> PyTree:
  """The search state, a plain pytree of arrays."""
  k_net, k_arch, k_data = jax.random.split(key, 3)
  x = jnp.zeros((search.config.batch_size,) + search.data.image_shape, jnp.float32)
  variables = search.net.init(k_net, x)
  arch = arch_optimizers.init_params(search.arch_opt, search.net.space, k_arch)
  return {
      "step": jnp.zeros([], jnp.int32),
      "epoch": jnp.zeros([], jnp.int32),
      "params": variables["params"],
      "batch_stats": variables["batch_stats"],
      "opt_state": search.weight_tx.init(variables["params"]),
      "arch": arch,
      "arch_opt_state": search.arch_opt.tx.init(arch),
      "data_key": jax.random.key_data(k_data),
  }


def live_masks(search: Search, state: PyTree) -> dict[str, jax.Array]:
  """Experts still active: the space's own sets and, where the optimizer
  keeps one, its wipeout mask (``optim.active_mask``)."""
  masks = search.net.default_masks()
  wiped = optim.active_mask(state["arch_opt_state"])
  for t in search.net.space.cell_types:
    if wiped is not None and not isinstance(wiped.get(t), (optax.MaskedNode, type(None))):
      masks[t] = masks[t] & wiped[t]
  return masks


def with_active_ops(search: Search, active_ops: rebuild_lib.ActiveOps) -> Search:
  """The same search over a supernet that builds only ``active_ops``."""
  return dataclasses.replace(
      search, net=dataclasses.replace(search.net, active_ops=tuple(map(tuple, active_ops))))


def built_ops(search: Search) -> rebuild_lib.ActiveOps:
  return tuple(search.net.built_ops(t) for t in search.net.space.cell_types)


def rebuild(search: Search, state: PyTree) -> tuple[Search, PyTree, dict[str, list[str]]]:
  """Drops the ops wiped on every edge of a cell type from the supernet.

  Returns the rebuilt search, the state with the dropped ops' parameters,
  batch statistics and weight-optimizer slots removed (everything else as it
  was), and the dropped ops per cell type (empty lists: nothing to rebuild).
  """
  active = rebuild_lib.surviving_ops(search.net, live_masks(search, state))
  dropped = rebuild_lib.dropped_ops(search.net, active)
  if not any(dropped.values()):
    return search, state, dropped
  new = with_active_ops(search, active)
  abstract = jax.eval_shape(lambda: init_state(new, jax.random.key(0)))
  state = dict(state, **{k: rebuild_lib.carry_over(state[k], abstract[k])
                         for k in ("params", "batch_stats", "opt_state")})
  return new, state, dropped
