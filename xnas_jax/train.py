"""The alternating first-order architecture search.

Each step (XNAS Alg. 1, lines 4-12; DARTS first order):

1. a weight step on a batch of the weights half: SGD with momentum, cosine
   schedule, weight decay and gradient clipping, as DARTS;
2. an architecture step on a batch of the architecture half, through any
   optax transformation: XNAS (fed ``dloss/du``), or DARTS's Adam / GD with
   softmax (fed ``dloss/da``).

One jitted gradient program serves both steps: it returns the loss, the
gradient w.r.t. the network weights, and the gradient w.r.t. a copy of the
mixture weights held per cell replica and per example (shape
``[replicas, batch, edges, experts]``); XLA compiles the supernet's backward
pass once instead of twice.  The search state is a plain pytree; it is
checkpointed with orbax at epoch boundaries, and a re-run resumes from it
bit-identically.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xnas_jax import arch as arch_lib
from xnas_jax import cli
from xnas_jax import compile_counter
from xnas_jax import config_checks
from xnas_jax import drnas
from xnas_jax import genotype as genotype_lib
from xnas_jax import hypergrad
from xnas_jax import input_pipeline
from xnas_jax import ops as ops_lib
from xnas_jax import optim
from xnas_jax import parallel
from xnas_jax import perturbation
from xnas_jax import rebuild as rebuild_lib
from xnas_jax.search_space import CELL_TYPES, get_search_space
from xnas_jax.supernet import Supernet

PyTree = Any


class ConfigError(ValueError):
  """A bad configuration value (reported in one line)."""


class SearchDiverged(RuntimeError):
  """A non-finite loss; the last good checkpoint is kept."""


# "drnas": Dirichlet mixture weights (xnas_jax.drnas); "frozen": uniform
# architecture weights that never move (the fixed-alpha supernet of Wang et
# al., trained for perturbation-based selection).
ARCH_OPTIMIZERS = ("xnas", "darts_adam", "gd_softmax", "drnas", "frozen")
# How the genotype is read off the trained supernet: magnitude (top-2 edges,
# strongest expert) or perturbation (DARTS-PT, xnas_jax.perturbation).
SELECTIONS = ("magnitude", "perturbation")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Keys that may differ when a search resumes: where the data lives, how many
# devices share the batch and how depthwise convolutions are computed (float
# summation order only), and the selection run after the search.  Anything
# else (more epochs change XNAS's horizon T and its rates) is another run.
RESUMABLE_KEYS = frozenset({"data_dir", "num_devices", "depthwise_impl", "selection",
                            "pt.tune_epochs", "pt.learning_rate"})


# The range of every numeric and boolean key of a search config
# (config_defaults.base_config); names and choices are checked below.
_RULES = (
    ("limit", "nonnegative_int"), ("seed", "nonnegative_int"), ("num_seeds", "positive_int"),
    ("channels", "positive_int"), ("num_cells", "positive_int"), ("batch_size", "positive_int"),
    ("num_devices", "nonnegative_int"), ("epochs", "positive_int"), ("rebuild_wiped", "bool"),
    ("augment.pad", "nonnegative_int"), ("augment.flip", "bool"),
    ("weight_optimizer.learning_rate", "positive"),
    ("weight_optimizer.min_learning_rate", "nonnegative"),
    ("weight_optimizer.momentum", "unit_open"), ("weight_optimizer.weight_decay", "nonnegative"),
    ("weight_optimizer.grad_clip", "positive"),
    ("hypergrad.inner_lr", "optional_positive"), ("hypergrad.exact", "bool"),
    ("hypergrad.epsilon", "positive"), ("hypergrad.coefficient", "positive"),
    ("hypergrad.maxiter", "positive_int"), ("hypergrad.damping", "nonnegative"),
    ("hypergrad.neumann_lr", "positive"),
    ("pt.tune_epochs", "nonnegative_int"), ("pt.learning_rate", "positive"),
)
# Per architecture optimizer, the keys of config.arch_optimizer it reads.
_ARCH_RULES = {
    "xnas": (("grad_bound", "positive"), ("zeta", "unit_closed"),
             ("learning_rate_normal", "optional_positive"),
             ("learning_rate_reduce", "optional_positive"), ("per_example_rewards", "bool")),
    "darts_adam": (("learning_rate", "positive"), ("b1", "unit_open"), ("b2", "unit_open"),
                   ("weight_decay", "nonnegative")),
    "gd_softmax": (("learning_rate", "positive"),),
    "drnas": (("learning_rate", "positive"), ("b1", "unit_open"), ("b2", "unit_open"),
              ("weight_decay", "nonnegative"), ("reg_scale", "nonnegative"), ("prior", "positive")),
    "frozen": (),
}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` naming the first bad value."""
  from xnas_jax.search_space import OP_SETS, TOPOLOGIES  # pylint: disable=import-outside-toplevel
  choose = lambda key, choices: config_checks.check_choice(config, key, choices, ConfigError)
  choose("dataset", input_pipeline.DATASETS)
  choose("op_set", sorted(OP_SETS))
  choose("topology", TOPOLOGIES)
  choose("arch_optimizer.name", ARCH_OPTIMIZERS)
  choose("arch_gradient", hypergrad.METHODS)
  choose("hypergrad.solver", ("cg", "neumann"))
  choose("selection", SELECTIONS)
  choose("compute_dtype", COMPUTE_DTYPES)
  choose("depthwise_impl", ops_lib.DEPTHWISE_IMPLS)
  config_checks.check(config, _RULES, ConfigError)
  name = config.arch_optimizer.name
  config_checks.check(config, [(f"arch_optimizer.{k}", kind) for k, kind in _ARCH_RULES[name]],
                      ConfigError)
  if name in ("drnas", "frozen") and config.arch_gradient != "first_order":
    raise ConfigError(f"arch_gradient {config.arch_gradient!r} is not available with "
                      f"arch_optimizer {name!r} (first_order only)")
  device_error = parallel.device_config_error(config.num_devices, config.batch_size)
  if device_error:
    raise ConfigError(device_error)


# --------------------------------------------------------------------------
# Construction.

@dataclasses.dataclass(frozen=True)
class Search:
  """Everything static about a search: network, optimizers, data, schedule."""
  config: ml_collections.ConfigDict
  net: Supernet
  data: input_pipeline.SearchData
  weight_tx: optax.GradientTransformation
  arch_tx: optax.GradientTransformation
  gradient_wrt: str
  steps_per_epoch: int
  arch_learning_rates: dict[str, float]
  rewards_per_step: dict[str, int]
  horizons: dict[str, int]  # T per cell type (XNAS only; empty otherwise)
  reward_bounds: dict[str, float] = dataclasses.field(default_factory=dict)  # L per cell type (XNAS)

  def mixture(self, arch: PyTree, masks: dict[str, jax.Array],
              key: jax.Array | None = None) -> dict[str, jax.Array]:
    """The mixture weights ``u`` of architecture parameters ``arch``: softmax
    over the live experts, or for DrNAS a Dirichlet sample (with ``key``) or
    the Dirichlet mean (without)."""
    if self.config.arch_optimizer.name == "drnas":
      if key is None:
        return drnas.mean_weights(arch, masks)
      return drnas.sample_weights(key, arch, masks)
    return arch_lib.mixture_weights(arch, masks)

  def arch_regularizer(self, arch: PyTree) -> jax.Array:
    """The term added to the architecture loss (DrNAS's KL to the prior; else 0)."""
    acfg = self.config.arch_optimizer
    if acfg.name == "drnas":
      return acfg.reg_scale * drnas.kl_regularizer(arch, acfg.prior)
    return jnp.zeros([])


def depthwise_impl(config: ml_collections.ConfigDict) -> str:
  """``config.depthwise_impl``, where "auto" keeps XLA's grouped convolution
  for the second-order hypergradients: their programs differentiate the
  supernet twice (a jvp of its gradient), and the k*k slices of the shifted
  form then take XLA:CPU over 20 minutes and 11 GB to compile (a DARTS
  second-order correction on the tests' tiny supernet), against about two
  minutes with grouped convolutions."""
  if config.depthwise_impl == "auto" and config.arch_gradient != "first_order":
    return "grouped"
  return config.depthwise_impl


def weight_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """DARTS's cosine schedule of the weight learning rate."""
  return optax.cosine_decay_schedule(
      cfg.learning_rate, max(total_steps, 1), alpha=cfg.min_learning_rate / cfg.learning_rate)


def weight_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """DARTS's weight optimizer: clip, L2 decay, momentum SGD on a cosine schedule."""
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                     optax.add_decayed_weights(cfg.weight_decay),
                     optax.sgd(weight_schedule(cfg, total_steps), momentum=cfg.momentum))


def hypergrad_options(config: ml_collections.ConfigDict, weight_lr: jax.Array) -> dict[str, Any]:
  """The keyword options of ``config.arch_gradient``'s estimator."""
  h = config.hypergrad
  return {
      "first_order": {},
      "darts_second_order": {"inner_lr": weight_lr if h.inner_lr is None else h.inner_lr,
                             "exact": h.exact, "epsilon": h.epsilon},
      "amended": {"coefficient": h.coefficient},
      "implicit": {"maxiter": h.maxiter, "damping": h.damping, "solver": h.solver,
                   "neumann_lr": h.neumann_lr},
  }[config.arch_gradient]


def build_search(config: ml_collections.ConfigDict) -> Search:
  """Validates the config, loads the data and builds network and optimizers."""
  validate_config(config)
  space = get_search_space(config.op_set, config.topology)
  data = input_pipeline.load_search_data(config.dataset, config.seed, data_dir=config.data_dir or None,
                                         limit=config.get("limit", 0))
  b = config.batch_size
  if b > len(data.train) or b > len(data.val):
    raise ConfigError(f"batch_size {b} is larger than the data "
                      f"({len(data.train)} train / {len(data.val)} val examples)")
  net = Supernet(space, data.num_classes, channels=config.channels, num_cells=config.num_cells,
                 depthwise_impl=depthwise_impl(config))
  steps = min(len(data.train), len(data.val)) // b
  acfg = config.arch_optimizer
  rates, per_step, horizons, bounds = {}, {}, {}, {}
  if acfg.name == "xnas":
    per_example = acfg.per_example_rewards
    txs = {}
    for t in CELL_TYPES:
      r = net.replicas[t]
      # Sec. 3.1: one round per validation example and cell replica, each
      # reward bounded by L (T_c = d E r_c).  The batch-mean fallback plays one
      # round per step whose reward sums r_c replicas' batch means: T_c = steps
      # x epochs, bounded by r_c L.
      per_step[t] = b * r if per_example else 1
      bounds[t] = acfg.grad_bound if per_example else acfg.grad_bound * max(r, 1)
      horizon = horizons[t] = (optim.search_horizon(steps * b, config.epochs, r)
                               if per_example else steps * config.epochs)
      # N of eq. 4: the experts each forecaster of this cell type has (2 per
      # edge in space S1, not the 7 of the op set).
      n = int(space.available_mask(t).sum(axis=1).max())
      lr = acfg.get(f"learning_rate_{t}", None)
      rates[t] = float(lr) if lr is not None else optim.regret_optimal_learning_rate(
          n, max(horizon, 1), bounds[t])
      txs[t] = optim.xnas(rates[t], bounds[t], horizon, acfg.zeta, per_step[t],
                          initial_mask=net.default_masks()[t])
    arch_tx = optax.multi_transform(txs, {t: t for t in CELL_TYPES})
    wrt = optim.GRADIENT_WRT_MIXTURE
  elif acfg.name in ("darts_adam", "drnas"):
    arch_tx = optim.darts_adam(acfg.learning_rate, acfg.b1, acfg.b2, acfg.weight_decay)
    wrt = optim.GRADIENT_WRT_LOGITS
  elif acfg.name == "frozen":
    arch_tx = optax.set_to_zero()
    wrt = optim.GRADIENT_WRT_LOGITS
  else:
    arch_tx = optim.gd_softmax(acfg.learning_rate)
    wrt = optim.GRADIENT_WRT_LOGITS
  return Search(config, net, data, weight_optimizer(config.weight_optimizer, steps * config.epochs),
                arch_tx, wrt, steps, rates, per_step, horizons, bounds)


def init_state(search: Search, key: jax.Array) -> PyTree:
  """The search state, a plain pytree of arrays."""
  k_net, k_arch, k_data = jax.random.split(key, 3)
  x = jnp.zeros((search.config.batch_size,) + search.data.image_shape, jnp.float32)
  variables = search.net.init(k_net, x)
  random_init = search.config.arch_optimizer.name in ("darts_adam", "gd_softmax", "drnas")
  arch = arch_lib.init_arch_params(search.net.space, k_arch, 1e-3 if random_init else 0.0)
  return {
      "step": jnp.zeros([], jnp.int32),
      "epoch": jnp.zeros([], jnp.int32),
      "params": variables["params"],
      "batch_stats": variables["batch_stats"],
      "opt_state": search.weight_tx.init(variables["params"]),
      "arch": arch,
      "arch_opt_state": search.arch_tx.init(arch),
      "data_key": jax.random.key_data(k_data),
  }


def with_active_ops(search: Search, active_ops: rebuild_lib.ActiveOps) -> Search:
  """The same search over a supernet that builds only ``active_ops``."""
  return dataclasses.replace(
      search, net=dataclasses.replace(search.net, active_ops=tuple(map(tuple, active_ops))))


def built_ops(search: Search) -> rebuild_lib.ActiveOps:
  return tuple(search.net.built_ops(t) for t in CELL_TYPES)


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


def live_masks(search: Search, state: PyTree) -> dict[str, jax.Array]:
  """Experts still active: the wipeout mask (XNAS) and the space's own sets."""
  masks = search.net.default_masks()
  found = optax.tree_utils.tree_get_all_with_path(state["arch_opt_state"], "mask")
  for _, m in found:
    for t in CELL_TYPES:
      if isinstance(m, dict) and t in m and not isinstance(m[t], optax.MaskedNode):
        masks[t] = masks[t] & m[t]
  return masks


# --------------------------------------------------------------------------
# Jitted pieces.

def loss_and_grads_fn(net: Supernet, compute_dtype: str = "float32") -> Callable:
  """The search's gradient program (unjitted): ``(params, batch_stats, u_full,
  masks, x, y, rng) -> (loss, correct, g_params, g_u, new_batch_stats)``.

  ``loss`` is the summed cross-entropy; ``g_u`` its gradient w.r.t. the
  per-replica, per-example copies ``u_full`` of the mixture weights.

  ``compute_dtype="bfloat16"`` runs the supernet in bfloat16: parameters,
  mixture weights and images are cast on the way in (so their gradients come
  back in float32, the dtype of the state), batch-norm statistics are
  reduced in float32 (Flax's default), and the loss is taken in float32.
  """
  dtype = COMPUTE_DTYPES[compute_dtype]

  def loss_and_grads(params, batch_stats, u_full, masks, x, y, rng):
    def loss_fn(params, u_full):
      cast = lambda tree: jax.tree.map(lambda a: a.astype(dtype), tree)
      logits, new_stats = net.apply({"params": cast(params), "batch_stats": batch_stats},
                                    x.astype(dtype), u_full, masks, train=True, rng=rng)
      new_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), new_stats, batch_stats)
      logits = logits.astype(jnp.float32)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.sum(losses), (new_stats, jnp.sum(jnp.argmax(logits, -1) == y))
    (loss, (new_stats, correct)), (g_params, g_u) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(params, u_full)
    return loss, correct, g_params, g_u, new_stats
  return loss_and_grads


def per_copy_weights(net: Supernet, u: dict[str, jax.Array], batch: int) -> dict[str, jax.Array]:
  """``u[t]`` ``[E, N]`` broadcast to one copy per replica and example ``[R, B, E, N]``."""
  return {t: jnp.broadcast_to(u[t], (max(net.replicas[t], 1), batch) + u[t].shape)
          for t in CELL_TYPES}


def make_functions(search: Search) -> dict[str, Callable]:
  """The jitted functions of a search (built once per network structure)."""
  net, cfg = search.net, search.config
  acfg = cfg.arch_optimizer
  def prepare(images, labels, mean, std, idx, key, augment):
    x, y = images[idx], labels[idx]
    if augment:
      x = input_pipeline.augment(key, x, pad=cfg.augment.pad, flip=cfg.augment.flip)
    return input_pipeline.standardize(x, mean, std), y

  grads_fn = jax.jit(loss_and_grads_fn(net, cfg.compute_dtype))

  def full_weights(arch, masks, key, batch):
    return per_copy_weights(net, search.mixture(arch, masks, key), batch)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def weight_update(params, opt_state, g_params, batch):
    g = jax.tree.map(lambda a: a / batch, g_params)  # gradient of the mean loss
    updates, opt_state = search.weight_tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  schedule = weight_schedule(cfg.weight_optimizer, search.steps_per_epoch * cfg.epochs)

  def shared_gradient(g_u):
    """Per-copy summed-loss gradients ``[R, B, E, N]`` -> the gradient of the
    batch's mean loss w.r.t. the shared ``u`` ``[E, N]``."""
    return {t: jnp.sum(g_u[t], axis=(0, 1)) / g_u[t].shape[1] for t in CELL_TYPES}

  def pull_back(arch, masks, g_shared, key=None):
    """A gradient w.r.t. ``u`` pulled back through ``search.mixture`` to ``arch``."""
    _, vjp = jax.vjp(lambda a: search.mixture(a, masks, key), arch)
    return vjp(g_shared)[0]

  def correction(params, batch_stats, arch, masks, train_batch, val_batch, val_weight_grad,
                 val_g_u, rng, step):
    """What ``config.arch_gradient`` adds to the first-order gradient of the
    mean validation loss, w.r.t. ``u`` (XNAS) or the logits.

    ``val_weight_grad`` and ``val_g_u`` are the summed-loss gradients (weights,
    per-copy mixture weights) the gradient program already computed on
    ``val_batch``: the amended and implicit terms reuse the first, DARTS's
    second order subtracts the first-order gradient made from the second
    instead of computing it again.
    """
    mixture = search.gradient_wrt == optim.GRADIENT_WRT_MIXTURE
    a0 = search.mixture(arch, masks) if mixture else arch

    def loss(p, a, batch):
      u = a if mixture else search.mixture(a, masks)
      logits, _ = net.apply({"params": p, "batch_stats": batch_stats}, batch[0], u, masks,
                            train=True, rng=rng)
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]))

    opts = hypergrad_options(cfg, schedule(step))
    v = jax.tree.map(lambda g: g / val_batch[1].shape[0], val_weight_grad)
    if cfg.arch_gradient == "amended":
      return hypergrad.amended_term(loss, params, a0, train_batch, v, **opts)
    if cfg.arch_gradient == "implicit":
      return hypergrad.implicit_term(loss, params, a0, train_batch, v, **opts)
    h = hypergrad.darts_second_order(loss, loss, params, a0, train_batch, val_batch, **opts)
    g_u = shared_gradient(val_g_u)  # dL_val(w, a)/du, from the gradient program
    first_order = g_u if mixture else pull_back(arch, masks, g_u)
    return jax.tree.map(jnp.subtract, h, first_order)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def arch_update(arch, arch_opt_state, g_u, masks, key, corr=None):
    """``corr`` (mean-loss scale, shared ``u``) is split evenly over the
    ``R x B`` copies: the copies' rewards then sum to the batch's hypergradient.
    ``key`` is the one ``full_weights`` drew ``u`` with (DrNAS's sample)."""
    if corr is None:
      corr = {t: jnp.zeros(g_u[t].shape[2:], g_u[t].dtype) for t in CELL_TYPES}
    if search.gradient_wrt == optim.GRADIENT_WRT_MIXTURE:
      if acfg.per_example_rewards:
        # One reward per example and cell replica, each L-bounded (Theorem 1).
        g = {t: jnp.sum(jnp.clip(g_u[t] + corr[t] / g_u[t].shape[0], -acfg.grad_bound,
                                 acfg.grad_bound), axis=(0, 1))
             for t in CELL_TYPES}
      else:
        g = jax.tree.map(jnp.add, shared_gradient(g_u), corr)
    else:
      g = pull_back(arch, masks, shared_gradient(g_u), key)
      g_reg = jax.grad(search.arch_regularizer)(arch)
      g = jax.tree.map(lambda a, b, c: a + b + c, g, corr, g_reg)
    updates, arch_opt_state = search.arch_tx.update(g, arch_opt_state, arch)
    return optax.apply_updates(arch, updates), arch_opt_state

  @jax.jit
  def evaluate(params, batch_stats, arch, masks, x, y):
    return evaluate_weights(params, batch_stats, search.mixture(arch, masks), masks, x, y)

  @jax.jit
  def evaluate_weights(params, batch_stats, u, masks, x, y):
    """Summed loss and correct count of the supernet with mixture weights ``u``."""
    logits, _ = net.apply({"params": params, "batch_stats": batch_stats}, x, u, masks,
                          train=False, rng=jax.random.key(0))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(losses), jnp.sum(jnp.argmax(logits, -1) == y)

  fns = {} if cfg.arch_gradient == "first_order" else {"correction": jax.jit(correction)}
  return fns | {
      "prepare": jax.jit(prepare, static_argnums=6),
      "grads": grads_fn,
      "full_weights": jax.jit(full_weights, static_argnums=3),
      "weight_update": weight_update,
      "arch_update": arch_update,
      "evaluate": evaluate,
      "evaluate_weights": evaluate_weights,
  }


def search_step(search: Search, fns: dict[str, Callable], state: PyTree, train_data, val_data,
                train_idx, val_idx) -> tuple[PyTree, jax.Array]:
  """One weight step and one architecture step; returns the step's metrics
  ``[train_loss_sum, train_correct, val_loss_sum, val_correct]`` (on device)."""
  key = jax.random.wrap_key_data(state["data_key"])
  step_key = jax.random.fold_in(key, state["step"])
  k_tr, k_val, k_noise1, k_noise2 = jax.random.split(step_key, 4)
  b = search.config.batch_size
  masks = live_masks(search, state)
  k_arch = jax.random.fold_in(step_key, 4)  # DrNAS's sample of u (unused otherwise)
  u_full = fns["full_weights"](state["arch"], masks, k_arch, b)
  x, y = fns["prepare"](*train_data, train_idx, k_tr, True)
  loss, correct, g_params, _, new_stats = fns["grads"](
      state["params"], state["batch_stats"], u_full, masks, x, y, k_noise1)
  params, opt_state = fns["weight_update"](state["params"], state["opt_state"], g_params, b)
  xv, yv = fns["prepare"](*val_data, val_idx, k_val, True)
  vloss, vcorrect, gv_params, g_u, _ = fns["grads"](params, new_stats, u_full, masks, xv, yv,
                                                    k_noise2)
  corr = None
  if "correction" in fns:  # second-order, amended or implicit hypergradient
    corr = fns["correction"](params, new_stats, state["arch"], masks, (x, y), (xv, yv), gv_params,
                             g_u, k_noise2, state["step"])
  arch, arch_opt_state = fns["arch_update"](state["arch"], state["arch_opt_state"], g_u, masks,
                                            k_arch, corr)
  new_state = dict(state, step=state["step"] + 1, params=params, batch_stats=new_stats,
                   opt_state=opt_state, arch=arch, arch_opt_state=arch_opt_state)
  return new_state, jnp.stack([loss, correct, vloss, vcorrect]).astype(jnp.float32)


# --------------------------------------------------------------------------
# Metrics.

def epoch_metrics(search: Search, state: PyTree, step_metrics: np.ndarray) -> dict[str, Any]:
  b = search.config.batch_size
  masks = live_masks(search, state)
  u = search.mixture(state["arch"], masks)
  sums = step_metrics.sum(axis=0)
  n = len(step_metrics) * b
  out = {
      "epoch": int(state["epoch"]),
      "step": int(state["step"]),
      "train_loss": float(sums[0] / n), "train_acc": float(sums[1] / n),
      "val_loss": float(sums[2] / n), "val_acc": float(sums[3] / n),
  }
  for t in CELL_TYPES:
    out[f"entropy_{t}"] = float(arch_lib.normalized_entropy(u[t]))
    out[f"active_{t}"] = int(np.asarray(masks[t]).sum())
    out[f"built_ops_{t}"] = len(search.net.built_ops(t))
  out.update(wipeout_gaps(search, state))
  notes: list[str] = []
  out["genotype"] = genotype_of(search, state, notes).to_dict()  # what a stop here would give
  if notes:
    out["selection_notes"] = notes
  return out


def wipeout_gaps(search: Search, state: PyTree) -> dict[str, float]:
  """The log-space wipeout gap ``2 eta L (T - t) zeta`` per cell type (XNAS
  Alg. 1, line 11): an expert whose log-weight trails its forecaster's leader
  by more than this is wiped at the next step."""
  acfg = search.config.arch_optimizer
  if search.gradient_wrt != optim.GRADIENT_WRT_MIXTURE:
    return {}
  out = {}
  for path, count in optax.tree_utils.tree_get_all_with_path(state["arch_opt_state"], "count"):
    if getattr(path[-1], "tuple_name", "") != "WipeoutState":
      continue
    t = next((p.key for p in path if getattr(p, "key", None) in CELL_TYPES), None)
    if t is not None:
      remaining = max(search.horizons[t] - int(count), 0)
      out[f"wipeout_gap_{t}"] = (2.0 * search.arch_learning_rates[t] * search.reward_bounds[t]
                                 * remaining * acfg.zeta)
  return out


def selection_weights(search: Search, state: PyTree) -> dict[str, np.ndarray]:
  """The ``u`` that magnitude selection reads edge strengths from: XNAS eq. 1,
  ``u_i = v_i / sum_{l=1..N} v_l`` over every expert the space has, wiped ones
  with the weight they had when wiped (see ``genotype.discretize_cell``)."""
  u = search.mixture(state["arch"], search.net.default_masks())
  return {t: np.asarray(u[t]) for t in CELL_TYPES}


def genotype_of(search: Search, state: PyTree,
                notes: list[str] | None = None) -> genotype_lib.Genotype:
  """Magnitude selection: the strongest live expert of the two strongest edges
  per node; fallbacks and ties are appended to ``notes``."""
  masks = live_masks(search, state)
  return genotype_lib.discretize(selection_weights(search, state), search.net.space,
                                 {t: np.asarray(masks[t]) for t in CELL_TYPES}, notes)


# A search is flagged as diverging when an epoch's training loss exceeds its
# first epoch's, or a uniform guess's (ln K, for a search that diverged within
# its first epoch), by this factor, or when the validation accuracy is still
# within CHANCE_MARGIN x chance after the first epoch.
DIVERGENCE_FACTOR = 10.0
CHANCE_MARGIN = 1.25


def divergence_warning(summary: dict[str, Any], first: dict[str, Any],
                       num_classes: int) -> str | None:
  """One line when an epoch looks diverged (the losses can stay finite under
  gradient clipping while the supernet learns nothing), else None."""
  advice = "lower weight_optimizer.learning_rate (or the architecture rate)"
  if summary["train_loss"] > DIVERGENCE_FACTOR * first["train_loss"]:
    return (f"epoch {summary['epoch']}: train loss {summary['train_loss']:.3g} is "
            f"{summary['train_loss'] / first['train_loss']:.0f}x epoch {first['epoch']}'s "
            f"({first['train_loss']:.3g}); the search is diverging: {advice}")
  uniform = math.log(num_classes)  # the cross-entropy of a uniform guess
  if summary["train_loss"] > DIVERGENCE_FACTOR * uniform:
    return (f"epoch {summary['epoch']}: train loss {summary['train_loss']:.3g} is "
            f"{summary['train_loss'] / uniform:.0f}x a uniform guess's (ln {num_classes} = "
            f"{uniform:.3g}); the search is diverging: {advice}")
  if summary["epoch"] > first["epoch"] and summary["val_acc"] <= CHANCE_MARGIN / num_classes:
    return (f"epoch {summary['epoch']}: val accuracy {summary['val_acc']:.3f} is at chance "
            f"(1/{num_classes}); the supernet is not learning: check the data and lower "
            "weight_optimizer.learning_rate")
  return None


def first_epoch_metrics(metrics_path: str, seeds: list[int]) -> dict[int, dict[str, Any]]:
  """Per seed index, the first epoch's metrics line already written (a resume)."""
  out: dict[int, dict[str, Any]] = {}
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      for line in f:
        row = json.loads(line)
        seed = row.get("seed", seeds[0])
        if seed in seeds:
          out.setdefault(seeds.index(seed), row)
  return out


def check_finite(step_metrics: np.ndarray, first_step: int) -> None:
  names = ("train loss", "train accuracy", "val loss", "val accuracy")
  bad = ~np.isfinite(step_metrics)
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise SearchDiverged(f"non-finite {names[j]} ({step_metrics[i, j]}) at step {first_step + i}")


# --------------------------------------------------------------------------
# The loop.

def seed_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One config per seed of a ``num_seeds``-seed run: seeds ``seed .. seed + K - 1``."""
  out = []
  for k in range(config.get("num_seeds", 1)):
    c = config.copy_and_resolve_references()
    c.seed = config.seed + k
    out.append(c)
  return out


def _stack(trees: list[PyTree]) -> PyTree:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: PyTree, k: int) -> PyTree:
  return jax.tree.map(lambda x: x[k], tree)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       progress: bool = True) -> dict[str, Any]:
  """Runs (or resumes) a search in ``workdir``; returns the final summary.

  Writes ``workdir/metrics.jsonl`` (one line per epoch and seed), orbax
  checkpoints under ``workdir/checkpoints`` and ``workdir/genotype.json``.

  With ``config.num_seeds = K > 1`` it runs K independent searches (seeds
  ``seed .. seed + K - 1``: own data split and order, initialization and
  wipeout masks) as one jitted, ``vmap``-ped step; the state gets a leading
  seed axis, each seed writes ``genotype_seed<s>.json``, and seed ``s``'s
  result equals a single search with ``seed = s``.  Returns ``state``,
  ``genotypes`` and ``summaries`` (one per seed) and, for the first seed,
  ``genotype`` and ``summary``.
  """
  from xnas_jax import checkpointing  # pylint: disable=import-outside-toplevel
  validate_config(config)
  configs = seed_configs(config)
  num_seeds = len(configs)
  searches = [build_search(c) for c in configs]
  search = searches[0]
  os.makedirs(workdir, exist_ok=True)
  keys = [jax.random.key(c.seed) for c in configs]
  manager = checkpointing.manager(os.path.join(workdir, "checkpoints"))

  def seed_state(state, k):
    return state if num_seeds == 1 else _unstack(state, k)

  def fresh_state(search_list):
    states = [init_state(s, k) for s, k in zip(search_list, keys)]
    return states[0] if num_seeds == 1 else _stack(states)

  def rebuilt(meta):  # a checkpoint of a rebuilt supernet records the ops it still builds
    if meta.get("active_ops") is None:
      return searches
    return [with_active_ops(s, meta["active_ops"]) for s in searches]

  try:
    restored = checkpointing.resume(
        manager, workdir, config.to_dict(), RESUMABLE_KEYS,
        lambda meta: jax.eval_shape(lambda: fresh_state(rebuilt(meta))))
  except checkpointing.ResumeRefused as e:
    raise ConfigError(str(e)) from None
  searches = rebuilt(restored.meta)
  search = searches[0]
  state = restored.state if restored.state is not None else fresh_state(searches)
  mesh = parallel.data_mesh(config.get("num_devices", 0))
  state = parallel.replicate(state, mesh)
  start_epoch = int(np.max(state["epoch"]))
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  checkpointing.truncate_metrics(metrics_path, start_epoch)

  compile_counter.install()

  def data_of(split_name):
    parts = [(getattr(s.data, split_name).images, getattr(s.data, split_name).labels,
              s.data.mean, s.data.std) for s in searches]
    return parallel.replicate(parts[0] if num_seeds == 1 else _stack(parts), mesh)

  def step_function(search, fns):
    if num_seeds == 1:
      return functools.partial(search_step, search, fns)
    # The whole step is one program; the old state's buffers are reused.
    return jax.jit(jax.vmap(functools.partial(search_step, search, fns)), donate_argnums=0)

  fns = make_functions(search)
  step = step_function(search, fns)
  train_data, val_data = data_of("train"), data_of("val")
  order_keys = [jax.random.key(c.seed + 1) for c in configs]
  b, steps = config.batch_size, search.steps_per_epoch
  n_train, n_val = len(search.data.train), len(search.data.val)
  epochs = range(start_epoch, config.epochs)
  bar = cli.progress(epochs, progress, "search")
  summaries: list[dict[str, Any]] = [{} for _ in configs]
  first_epoch = first_epoch_metrics(metrics_path, [c.seed for c in configs])
  try:
    for epoch in bar:
      # Time and compilations of this epoch's steps and metrics; not of the
      # previous checkpoint, whose first save on several devices compiles
      # orbax's per-device copies (once).
      t0, compiled_before = time.time(), compile_counter.snapshot()
      # One transfer per epoch: the index batches, each split over the devices.
      tr = np.stack([input_pipeline.epoch_batches(k, n_train, b, 2 * epoch)[:steps]
                     for k in order_keys], axis=1)  # [steps, seeds, batch]
      va = np.stack([input_pipeline.epoch_batches(k, n_val, b, 2 * epoch + 1)[:steps]
                     for k in order_keys], axis=1)
      if num_seeds == 1:
        tr, va = tr[:, 0], va[:, 0]
      tr, va = parallel.shard_batches(tr, mesh), parallel.shard_batches(va, mesh)
      first = int(np.max(state["step"]))
      step_metrics = []
      for i in range(steps):
        state, m = step(state, train_data, val_data, tr[i], va[i])
        step_metrics.append(m)
      step_metrics = np.asarray(jnp.stack(step_metrics)).reshape(steps, num_seeds, -1)
      for k in range(num_seeds):
        check_finite(step_metrics[:, k], first)
      state = dict(state, epoch=state["epoch"] + 1)
      for k, s in enumerate(searches):
        summaries[k] = dict(epoch_metrics(s, seed_state(state, k), step_metrics[:, k]),
                            seed=configs[k].seed)
      now = compile_counter.snapshot()  # after the metrics, whose programs compile once
      timing = {"epoch_time_s": round(time.time() - t0, 3),
                "compilations": now[0] - compiled_before[0],  # during this epoch
                "compile_s": round(now[1] - compiled_before[1], 3)}
      timing["step_time_s"] = round((timing["epoch_time_s"] - timing["compile_s"]) / steps, 4)
      summaries = [dict(summary, **timing) for summary in summaries]
      for k, summary in enumerate(summaries):
        first_epoch.setdefault(k, summary)
        warning = divergence_warning(summary, first_epoch[k], search.data.num_classes)
        if warning:
          summary["warning"] = warning
          print(f"warning: seed {configs[k].seed}: {warning}", file=sys.stderr)
      if config.rebuild_wiped and epoch + 1 < config.epochs:
        rebuilt, state, dropped = rebuild(search, state)
        if any(dropped.values()):
          searches = [with_active_ops(s, built_ops(rebuilt)) for s in searches]
          search = searches[0]
          state = parallel.replicate(state, mesh)
          fns = make_functions(search)  # compiles at the next step
          step = step_function(search, fns)
          for summary in summaries:
            summary["rebuilt_without"] = dropped
      with open(metrics_path, "a") as f:
        for summary in summaries:
          f.write(json.dumps(summary) + "\n")
      checkpointing.save(manager, int(np.max(state["epoch"])), state,
                         {"active_ops": [list(o) for o in built_ops(search)]})
      if hasattr(bar, "set_postfix"):
        s0 = summaries[0]
        bar.set_postfix(train_acc=f"{s0['train_acc']:.3f}", val_acc=f"{s0['val_acc']:.3f}",
                        H=f"{s0['entropy_normal']:.3f}")
  finally:
    manager.wait_until_finished()
    manager.close()
  genotypes = []
  for k, s in enumerate(searches):
    one = seed_state(state, k)
    suffix = "" if num_seeds == 1 else f"_seed{configs[k].seed}"
    notes: list[str] = []
    genotype = genotype_of(s, one, notes)
    extra = {"selection_notes": notes} if notes else {}
    if config.selection == "perturbation":
      extra["magnitude_genotype"] = genotype.to_dict()
      _write(workdir, f"genotype_magnitude{suffix}.json", genotype.to_json())
      genotype, log, _ = perturbation.select(s, one, tune_epochs=config.pt.tune_epochs,
                                             learning_rate=config.pt.learning_rate, fns=fns)
      _write(workdir, f"selection_log{suffix}.json", json.dumps(log, indent=1))
    genotypes.append(genotype)
    _write(workdir, f"genotype{suffix}.json", genotype.to_json())
    summaries[k] = dict(summaries[k], supernet_test_acc=supernet_test_accuracy(s, fns, one),
                        genotype=genotype.to_dict(), arch_learning_rates=s.arch_learning_rates,
                        selection=config.selection, **extra)
  return {"state": state, "genotype": genotypes[0], "summary": summaries[0],
          "genotypes": genotypes, "summaries": summaries}


def _write(workdir: str, name: str, text: str) -> None:
  with open(os.path.join(workdir, name), "w") as f:
    f.write(text)


def supernet_test_accuracy(search: Search, fns: dict[str, Callable], state: PyTree) -> float:
  """Accuracy of the (masked) supernet on the held-out test split."""
  d = search.data
  correct = 0
  masks = live_masks(search, state)
  for x, y in input_pipeline.iterate(d.test, 256):
    x = input_pipeline.standardize(jnp.asarray(x), d.mean, d.std)
    _, c = fns["evaluate"](state["params"], state["batch_stats"], state["arch"], masks, x,
                           jnp.asarray(y))
    correct += int(c)
  return correct / max(len(d.test), 1)


