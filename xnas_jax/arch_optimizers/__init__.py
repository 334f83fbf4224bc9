"""Architecture optimizers, chosen by name from a registry.

Each optimizer is one module of this package with

* ``RULES``: the range of every key of ``config.arch_optimizer`` it reads
  (``config_checks`` rules, keys relative to ``arch_optimizer``), and
  optionally ``CHOICES``: ``(key, allowed names)`` pairs;
* ``HYPERGRADIENTS``: the ``config.arch_gradient`` estimators it accepts;
* ``build(config, shape) -> ArchOptimizer``;
* optionally ``check(config, error)``: refuses, in one line, options it
  cannot work with; ``PERTURBATION``: the SDARTS perturbation it always
  applies (an alias such as ``sdarts_rs``); ``SAMPLES``: True if it samples
  one expert per edge (no mixture for SDARTS to perturb).

An optimizer defined outside the package (a notebook, a user's own module)
joins the registry with ``register(name, build, ...)`` and is then chosen
by ``config.arch_optimizer.name`` like the built-in ones.

The search loop composes what ``ArchOptimizer`` holds and never tests an
optimizer's name, as big_vision picks its models with
``importlib.import_module(f"big_vision.models.{config.model_name}")``.
Adding an optimizer is one new module here plus its config keys.
"""
from __future__ import annotations

import importlib
import pkgutil
import types
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xnas_jax import arch as arch_lib
from xnas_jax import config_checks
from xnas_jax import edge_norm
from xnas_jax import optim
from xnas_jax import sdarts
from xnas_jax.search_space import SearchSpace

PyTree = Any
Masks = dict[str, jax.Array]

# The order of a search step's two halves (XNAS Alg. 1 updates the weights,
# then the experts; DARTS's Alg. 1 takes the architecture step first, so its
# unrolled model starts from the weights before the weight step).
WEIGHTS_FIRST = "weights_first"
ARCH_FIRST = "arch_first"


class SearchShape(NamedTuple):
  """What an optimizer may need to know about the search it serves."""
  space: SearchSpace
  replicas: dict[str, int]  # cells of each type in the supernet
  default_masks: dict[str, np.ndarray]  # experts that exist, per cell type [E, N]
  batch_size: int
  steps_per_epoch: int
  epochs: int


class ArchOptimizer(NamedTuple):
  """An architecture optimizer as the search loop uses it.

  Attributes:
    tx: the optax transformation of the architecture parameters.  Its
      ``update(grads, state, params, correction=...)`` takes what
      ``gradient`` returns; ``correction`` is a hypergradient estimator's
      term (mean-loss scale, w.r.t. ``gradient_wrt``).
    gradient_wrt: the coordinates of ``correction``: ``optim.GRADIENT_WRT_MIXTURE``
      (``u``) or ``optim.GRADIENT_WRT_LOGITS`` (the parameters).
    mixture: ``(arch, masks, key=None, step=None) -> u``, the mixture weights
      (a sample when the optimizer draws one and ``key`` is given; ``step``
      for a sampler with a schedule, GDAS's temperature).
    gradient: ``(arch, masks, g_u, correction, key, step=None) -> grads`` for
      ``tx`` from the gradient program's per-copy ``dloss/du`` ``[R, B, E, N]``
      (summed loss).
    run_masks: ``(arch, masks, key, step) -> masks`` of the experts a step's
      forward passes run (None: the live ones): GDAS's one sampled expert per
      edge, so that the others cost nothing under the supernet's ``lax.cond``.
    init_scale: the architecture parameters start at ``init_scale * N(0, 1)``
      (0: uniform mixture).
    step_order: ``WEIGHTS_FIRST`` or ``ARCH_FIRST``.
    warmup_epochs: epochs of weight steps only before the first architecture step.
    init_params: ``(space, key) -> arch``, the initial parameters (None:
      ``arch.init_arch_params`` at ``init_scale``; ``edge_norm.wrap`` adds
      the edges' betas).
    perturb: ``(u, masks, key, step, loss) -> u'``, the mixture weights the
      weight step trains at instead of ``mixture``'s (None: the same);
      ``loss(u)`` is the step's training batch's mean loss at the current
      weights (SDARTS, ``xnas_jax.sdarts``).
    pending_ops: ``opt_state -> {cell type: [edge, ...]}``, the edges the
      optimizer has decided whose op it leaves to the selection method
      (SGAS+PT), or None; ``settle_op(opt_state, cell type, edge, op) ->
      opt_state`` gives one its op.  The loop settles them after each epoch
      (``selection.settle_pending``).
    learning_rates, rewards_per_step, horizons, reward_bounds: per cell type,
      XNAS's eta, rounds per step, T and L (empty for the others); zeta its
      wipeout relaxation.
  """
  tx: optax.GradientTransformationExtraArgs
  gradient_wrt: str
  mixture: Callable[..., dict[str, jax.Array]]
  gradient: Callable[..., PyTree]
  init_scale: float = 0.0
  step_order: str = WEIGHTS_FIRST
  warmup_epochs: int = 0
  run_masks: Callable[..., dict[str, jax.Array]] | None = None
  init_params: Callable[[SearchSpace, jax.Array], PyTree] | None = None
  perturb: Callable[..., dict[str, jax.Array]] | None = None
  pending_ops: Callable[[PyTree], dict[str, list[int]]] | None = None
  settle_op: Callable[[PyTree, str, int, int], PyTree] | None = None
  learning_rates: dict[str, float] = {}
  rewards_per_step: dict[str, int] = {}
  horizons: dict[str, int] = {}
  reward_bounds: dict[str, float] = {}
  zeta: float = 1.0


# Optimizers registered at run time: name -> a namespace with a module's attributes.
_REGISTERED: dict[str, types.SimpleNamespace] = {}


def register(name: str, build: Callable[[ml_collections.ConfigDict, SearchShape], ArchOptimizer],
             rules: tuple = (), hypergradients: tuple[str, ...] = ("first_order",),
             choices: tuple = ()) -> None:
  """Adds optimizer ``name`` to the registry: ``build(config, shape)`` makes
  it; ``rules``, ``hypergradients`` and ``choices`` are a module's
  ``RULES``, ``HYPERGRADIENTS`` and ``CHOICES``.  Registering a name again
  replaces it; a built-in name cannot be taken."""
  if name in _builtin_names():
    raise ValueError(f"arch_optimizer {name!r} is built in; register another name")
  _REGISTERED[name] = types.SimpleNamespace(build=build, RULES=tuple(rules),
                                            HYPERGRADIENTS=tuple(hypergradients),
                                            CHOICES=tuple(choices))


def _builtin_names() -> tuple[str, ...]:
  return tuple(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def names() -> tuple[str, ...]:
  """The registered optimizers: the modules of this package, then ``register``'s."""
  return tuple(sorted(_builtin_names())) + tuple(sorted(_REGISTERED))


def get(name: str):
  """The module (or registered namespace) of optimizer ``name``."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in names():
    raise ValueError(f"arch_optimizer.name {name!r} is not one of {', '.join(names())}")
  return importlib.import_module(f"{__name__}.{name}")


# Keys every optimizer honours: ``warmup_epochs`` (None: the optimizer's own),
# and SDARTS's perturbation of the weight step's mixture (``xnas_jax.sdarts``):
# ``perturb_mixture`` none | random | adversarial, its radius growing from
# ``epsilon_min`` to ``epsilon``, ``pgd_steps`` ascent steps for adversarial.
COMMON_RULES = (("warmup_epochs", "optional_nonnegative_int"), ("epsilon", "positive"),
                ("epsilon_min", "nonnegative"), ("pgd_steps", "positive_int"))


def validate(config: ml_collections.ConfigDict,
             error: type = config_checks.ConfigError) -> None:
  """Checks ``config.arch_optimizer`` and its compatibility with ``config.arch_gradient``."""
  config_checks.check_choice(config, "arch_optimizer.name", names(), error)
  module = get(config.arch_optimizer.name)
  rules = COMMON_RULES + tuple(module.RULES)
  config_checks.check(config, [(f"arch_optimizer.{k}", kind) for k, kind in rules], error)
  for key, choices in getattr(module, "CHOICES", ()):
    config_checks.check_choice(config, f"arch_optimizer.{key}", choices, error)
  if hasattr(module, "check"):  # what only the optimizer itself can judge
    module.check(config, error)
  config_checks.check_choice(config, "arch_optimizer.perturb_mixture", sdarts.KINDS, error)
  own, asked = getattr(module, "PERTURBATION", None), config.arch_optimizer.perturb_mixture
  if own is not None and asked not in ("none", own):
    raise error(f"arch_optimizer {config.arch_optimizer.name!r} perturbs the mixture "
                f"{own!r}ly; perturb_mixture {asked!r} contradicts it")
  if (own or asked) != "none" and getattr(module, "SAMPLES", False):
    raise error(f"arch_optimizer {config.arch_optimizer.name!r} samples one expert per edge; "
                f"perturb_mixture {own or asked!r} has no mixture to perturb")
  if config.arch_optimizer.epsilon_min > config.arch_optimizer.epsilon:
    raise error(f"arch_optimizer.epsilon_min {config.arch_optimizer.epsilon_min} is larger "
                f"than arch_optimizer.epsilon {config.arch_optimizer.epsilon}")
  if config.arch_gradient not in module.HYPERGRADIENTS:
    raise error(f"arch_gradient {config.arch_gradient!r} is not available with arch_optimizer "
                f"{config.arch_optimizer.name!r} ({' or '.join(module.HYPERGRADIENTS)} only)")


def build(config: ml_collections.ConfigDict, shape: SearchShape) -> ArchOptimizer:
  """The optimizer ``config.arch_optimizer.name`` for a search of ``shape``,
  with PC-DARTS's edge normalization around it where the config asks for it
  (``edge_norm.enabled``)."""
  module = get(config.arch_optimizer.name)
  opt = module.build(config, shape)
  acfg = config.arch_optimizer
  warmup = acfg.get("warmup_epochs", None)
  if warmup is not None:
    opt = opt._replace(warmup_epochs=int(warmup))
  kind = getattr(module, "PERTURBATION", None) or acfg.get("perturb_mixture", "none")
  if kind != "none":
    opt = opt._replace(perturb=sdarts.perturbation(
        kind, shape.steps_per_epoch, shape.epochs, acfg.get("epsilon", sdarts.EPS_MAX),
        acfg.get("epsilon_min", sdarts.EPS_MIN), acfg.get("pgd_steps", sdarts.PGD_STEPS)))
  if edge_norm.enabled(config):
    opt = edge_norm.wrap(opt, shape.space, config.edge_norm_optimizer,
                         lambda space, key, opt=opt: init_params(opt, space, key))
  return opt


def init_params(opt: ArchOptimizer, space: SearchSpace, key: jax.Array) -> PyTree:
  """The initial architecture parameters of ``opt``."""
  if opt.init_params is not None:
    return opt.init_params(space, key)
  return arch_lib.init_arch_params(space, key, opt.init_scale)


def logit_gradient(mixture: Callable[..., dict[str, jax.Array]],
                   regularizer: Callable[[PyTree], jax.Array] | None = None) -> Callable[..., PyTree]:
  """``gradient`` of an optimizer of the parameters behind ``mixture``: the
  batch's mean-loss gradient pulled back through ``mixture`` (drawn with the
  step's ``key``), plus the correction, plus the regularizer's gradient."""
  def gradient(arch, masks, g_u, correction, key, step=None):
    _, vjp = jax.vjp(lambda a: mixture(a, masks, key, step), arch)
    g = vjp(optim.shared_gradient(g_u))[0]
    g_reg = (jax.grad(regularizer)(arch) if regularizer is not None
             else jax.tree.map(jnp.zeros_like, arch))
    return jax.tree.map(lambda a, b, c: a + b + c, g, correction, g_reg)
  return gradient


def softmax_mixture(arch, masks, key=None, step=None):
  """``u = softmax(a)`` over the live experts (DARTS; XNAS eq. 1 with ``a = ln v``)."""
  del key, step
  return arch_lib.mixture_weights(arch, masks)


def with_correction_as_extra_arg(tx: optax.GradientTransformation
                                 ) -> optax.GradientTransformationExtraArgs:
  """``tx`` that accepts (and ignores) the ``correction`` extra argument:
  the logit optimizers get it through ``gradient`` already."""
  return optax.with_extra_args_support(tx)
