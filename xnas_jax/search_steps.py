"""The search's step functions (XNAS Alg. 1, lines 4-12; DARTS Alg. 1).

One step is a weight step on a batch of the weights half (DARTS's momentum
SGD) and an architecture step on a batch of the architecture half, through
the search's ``ArchOptimizer``.  The gradient program returns the loss, the
gradient w.r.t. the network weights and the gradient w.r.t. a copy of the
mixture weights per cell replica and example (``[replicas, batch, edges,
experts]``).  Both steps run either this program (one compilation of the
supernet's backward pass) or, with ``search_setup.separate_step_programs``,
one each that differentiates only what the step uses: the weights, the
mixture weights (a second compilation, and steps that skip the other
gradient).

The pieces are module-level functions of the (static) ``Search``;
``step_functions(search)`` jits them once per network structure and returns
them as a ``StepFunctions``, which ``search_step``, perturbation selection
and the benchmarks share.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from xnas_jax import budget
from xnas_jax import hypergrad
from xnas_jax import input_pipeline
from xnas_jax import optim
from xnas_jax.arch_optimizers import ARCH_FIRST, WEIGHTS_FIRST
from xnas_jax.search_setup import COMPUTE_DTYPES, Search, live_masks, separate_step_programs
from xnas_jax.search_setup import weight_schedule
from xnas_jax.supernet import Supernet

PyTree = Any


def loss_and_grads_fn(net: Supernet, compute_dtype: str = "float32",
                      weight_grads: bool = True, mixture_grads: bool = True) -> Callable:
  """The search's gradient program (unjitted): ``(params, batch_stats, u_full,
  masks, x, y, rng) -> (loss, correct, g_params, g_u, new_batch_stats)``.

  ``loss`` is the summed cross-entropy; ``g_u`` its gradient w.r.t. the
  per-replica, per-example copies ``u_full`` of the mixture weights;
  ``g_params`` is None with ``weight_grads=False``, ``g_u`` with
  ``mixture_grads=False`` (each then costs nothing).

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
    argnums = tuple(i for i, on in enumerate((weight_grads, mixture_grads)) if on)
    (loss, (new_stats, correct)), grads = jax.value_and_grad(
        loss_fn, argnums=argnums, has_aux=True)(params, u_full)
    g_params, g_u = (grads[argnums.index(i)] if i in argnums else None for i in (0, 1))
    return loss, correct, g_params, g_u, new_stats
  # Named for what it differentiates (the compiled module's name in profiles).
  loss_and_grads.__name__ = loss_and_grads.__qualname__ = (
      "loss_and_grads" if weight_grads and mixture_grads
      else "weight_grads" if weight_grads else "mixture_grads")
  return loss_and_grads


def per_copy_weights(net: Supernet, u: dict[str, jax.Array], batch: int) -> dict[str, jax.Array]:
  """``u[t]`` ``[E, N]`` broadcast to one copy per replica and example ``[R, B, E, N]``
  (and PC-DARTS's edge weights ``u["edges"][t]`` ``[E]``, where present, to ``[R, B, E]``)."""
  copies = lambda a, t: jnp.broadcast_to(a, (max(net.replicas[t], 1), batch) + a.shape)
  types = net.space.cell_types
  out = {t: copies(u[t], t) for t in types}
  if "edges" in u:
    out["edges"] = {t: copies(u["edges"][t], t) for t in types}
  return out


def prepare(search: Search, images, labels, mean, std, idx, key, augment: bool):
  """A batch by index: gathered, augmented (``augment``) and standardized."""
  x, y = images[idx], labels[idx]
  if augment:
    x = input_pipeline.augment(key, x, pad=search.config.augment.pad,
                               flip=search.config.augment.flip)
  return input_pipeline.standardize(x, mean, std), y


def full_weights(search: Search, arch, masks, key, batch: int, step=None):
  """The step's mixture weights (a sample with ``key`` where the optimizer
  draws one), one copy per replica and example."""
  return per_copy_weights(search.net, search.mixture(arch, masks, key, step), batch)


def perturbed_weights(search: Search, params, batch_stats, arch, masks, x, y, key, batch: int,
                      step):
  """The weight step's mixture weights, perturbed by the optimizer
  (``ArchOptimizer.perturb``, SDARTS), one copy per replica and example.  The
  perturbation's loss is the batch's mean loss at the current weights with
  running batch statistics (``evaluate_weights``)."""
  u = search.mixture(arch, masks, key, step)  # the unperturbed step's own sample, if any
  loss = lambda v: evaluate_weights(search, params, batch_stats, v, masks, x, y)[0] / x.shape[0]
  return per_copy_weights(
      search.net, search.arch_opt.perturb(u, masks, jax.random.fold_in(key, 1), step, loss), batch)


def run_masks(search: Search, arch, masks, key, step):
  """The experts the step's forward passes run (``ArchOptimizer.run_masks``)."""
  return search.arch_opt.run_masks(arch, masks, key, step)


def weight_update(search: Search, params, opt_state, g_params, batch: int):
  """The weight step on the gradient of the batch's mean loss."""
  g = jax.tree.map(lambda a: a / batch, g_params)
  updates, opt_state = search.weight_tx.update(g, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def correction(search: Search, params, batch_stats, arch, masks, train_batch, val_batch,
               val_weight_grad, val_g_u, rng, step):
  """What ``config.arch_gradient`` adds to the first-order gradient of the
  mean validation loss, w.r.t. the optimizer's ``gradient_wrt`` coordinates.

  ``val_weight_grad`` and ``val_g_u`` are the summed-loss gradients (weights,
  per-copy mixture weights) the gradient program already computed on
  ``val_batch``: the amended and implicit terms reuse the first, DARTS's
  second order subtracts the first-order gradient made from the second
  instead of computing it again.
  """
  net, cfg = search.net, search.config
  mixture = search.arch_opt.gradient_wrt == optim.GRADIENT_WRT_MIXTURE
  a0 = search.mixture(arch, masks) if mixture else arch

  def loss(p, a, batch):
    u = a if mixture else search.mixture(a, masks)
    logits, _ = net.apply({"params": p, "batch_stats": batch_stats}, batch[0], u, masks,
                          train=True, rng=rng)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]))

  schedule = weight_schedule(cfg.weight_optimizer, search.steps_per_epoch * cfg.epochs)
  opts = hypergrad.options(cfg, schedule(step))
  v = jax.tree.map(lambda g: g / val_batch[1].shape[0], val_weight_grad)
  g_u = optim.shared_gradient(val_g_u)  # dL_val(w, a)/du, from the gradient program
  if mixture:
    first_order = g_u
  else:
    _, vjp = jax.vjp(lambda a: search.mixture(a, masks), arch)
    first_order = vjp(g_u)[0]
  return hypergrad.CORRECTIONS[cfg.arch_gradient](loss, params, a0, train_batch, val_batch, v,
                                                  first_order, **opts)


def budget_correction(search: Search, arch, masks):
  """The budget penalty's gradient (``budget.penalty``) in the optimizer's
  coordinates: w.r.t. ``u`` for XNAS, pulled back through the mixture for
  the logit optimizers (at the deterministic mixture, not a sample)."""
  if search.arch_opt.gradient_wrt == optim.GRADIENT_WRT_MIXTURE:
    return budget.penalty_gradient(search.costs, search.mixture(arch, masks))
  return jax.grad(lambda a: budget.penalty(search.costs, search.mixture(a, masks)))(arch)


def arch_update(search: Search, arch, arch_opt_state, g_u, masks, key, corr=None, step=None):
  """The architecture step from the per-copy ``dloss/du`` ``g_u`` and a
  hypergradient correction ``corr`` (mean-loss scale; zero if None).  ``key``
  is the one ``full_weights`` drew ``u`` with (DrNAS's sample).  At a
  ``step`` within the optimizer's warm-up epochs nothing changes."""
  if corr is None:  # zeros shaped as the shared weights (and PC-DARTS's edge weights)
    corr = jax.tree.map(lambda g: jnp.zeros(g.shape[2:], g.dtype), g_u)
  if search.costs is not None:
    corr = jax.tree.map(jnp.add, corr, budget_correction(search, arch, masks))
  opt = search.arch_opt
  grads = opt.gradient(arch, masks, g_u, corr, key, step)
  updates, new_opt_state = opt.tx.update(grads, arch_opt_state, arch, correction=corr)
  new_arch = optax.apply_updates(arch, updates)
  warmup = opt.warmup_epochs * search.steps_per_epoch
  if warmup == 0 or step is None:
    return new_arch, new_opt_state
  on = step >= warmup
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(on, n, o), new, old)
  return keep(new_arch, arch), keep(new_opt_state, arch_opt_state)


def evaluate_weights(search: Search, params, batch_stats, u, masks, x, y):
  """Summed loss and correct count of the supernet with mixture weights ``u``
  (running batch statistics)."""
  logits, _ = search.net.apply({"params": params, "batch_stats": batch_stats}, x, u, masks,
                               train=False, rng=jax.random.key(0))
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.sum(losses), jnp.sum(jnp.argmax(logits, -1) == y)


def batch_stats_accuracy(search: Search, params, batch_stats, u, masks, xs, ys):
  """Accuracy over the batches ``xs`` ``[K, B, ...]`` (labels ``ys``) of the
  supernet at mixture weights ``u``, each batch normalized by its own
  statistics: DARTS-PT's measure of a perturbed supernet, whose running
  statistics describe the unperturbed one."""
  def one(_, xy):
    logits, _ = search.net.apply({"params": params, "batch_stats": batch_stats}, xy[0], u, masks,
                                 train=True, rng=jax.random.key(0))
    return None, jnp.sum(jnp.argmax(logits, -1) == xy[1])
  return jnp.sum(jax.lax.scan(one, None, (xs, ys))[1]) / (ys.shape[0] * ys.shape[1])


def evaluate(search: Search, params, batch_stats, arch, masks, x, y):
  """``evaluate_weights`` at the architecture's mixture weights."""
  return evaluate_weights(search, params, batch_stats, search.mixture(arch, masks), masks, x, y)


class StepFunctions(NamedTuple):
  """The jitted pieces of a search (``step_functions``)."""
  prepare: Callable
  grads: Callable
  weight_grads: Callable  # the weight step's: ``grads`` or one without g_u
  arch_grads: Callable  # the architecture step's: ``grads`` or one without g_params
  full_weights: Callable
  perturbed_weights: Callable | None  # None: the weight step trains at full_weights
  run_masks: Callable | None  # None: the forward passes run the live experts
  weight_update: Callable
  arch_update: Callable
  evaluate: Callable
  evaluate_weights: Callable
  batch_stats_accuracy: Callable
  correction: Callable | None  # None for first-order searches


def step_functions(search: Search) -> StepFunctions:
  """The search's functions jitted for its network structure (built once;
  again after a rebuild drops ops)."""
  bind = lambda f: functools.partial(f, search)
  dtype = search.config.compute_dtype
  grads = jax.jit(loss_and_grads_fn(search.net, dtype))
  separate = separate_step_programs(search.config, search.steps_per_epoch)
  return StepFunctions(
      prepare=jax.jit(bind(prepare), static_argnums=6),
      grads=grads,
      weight_grads=(jax.jit(loss_and_grads_fn(search.net, dtype, mixture_grads=False))
                    if separate else grads),
      arch_grads=(jax.jit(loss_and_grads_fn(search.net, dtype, weight_grads=False))
                  if separate else grads),
      full_weights=jax.jit(bind(full_weights), static_argnums=3),
      perturbed_weights=(jax.jit(bind(perturbed_weights), static_argnums=7)
                         if search.arch_opt.perturb is not None else None),
      run_masks=(jax.jit(bind(run_masks)) if search.arch_opt.run_masks is not None else None),
      weight_update=jax.jit(bind(weight_update), donate_argnums=(0, 1), static_argnums=3),
      arch_update=jax.jit(bind(arch_update), donate_argnums=(0, 1)),
      evaluate=jax.jit(bind(evaluate)),
      evaluate_weights=jax.jit(bind(evaluate_weights)),
      batch_stats_accuracy=jax.jit(bind(batch_stats_accuracy)),
      correction=(jax.jit(bind(correction)) if search.config.arch_gradient in hypergrad.CORRECTIONS
                  else None),
  )


def _keys(state: PyTree):
  """The step's keys: train and val augmentation, train and val noise, the
  mixture samples of the two halves (DrNAS; unused otherwise)."""
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state["data_key"]), state["step"])
  k_tr, k_val, k_noise1, k_noise2 = jax.random.split(step_key, 4)
  return k_tr, k_val, k_noise1, k_noise2, jax.random.fold_in(step_key, 4), jax.random.fold_in(
      step_key, 5)


def weights_first_step(search: Search, fns: StepFunctions, state: PyTree, train_data, val_data,
                       train_idx, val_idx) -> tuple[PyTree, jax.Array]:
  """XNAS Alg. 1: the weight step (line 5), then the experts' step on the
  updated weights (lines 6-12)."""
  k_tr, k_val, k_noise1, k_noise2, k_arch, _ = _keys(state)
  b = search.config.batch_size
  masks = live_masks(search, state)
  u_full = fns.full_weights(state["arch"], masks, k_arch, b, state["step"])
  run = _run_masks(fns, state["arch"], masks, k_arch, state["step"])
  x, y = fns.prepare(*train_data, train_idx, k_tr, True)
  u_weights = u_full if fns.perturbed_weights is None else fns.perturbed_weights(
      state["params"], state["batch_stats"], state["arch"], masks, x, y, k_arch, b, state["step"])
  loss, correct, g_params, _, new_stats = fns.weight_grads(
      state["params"], state["batch_stats"], u_weights, run, x, y, k_noise1)
  params, opt_state = fns.weight_update(state["params"], state["opt_state"], g_params, b)
  xv, yv = fns.prepare(*val_data, val_idx, k_val, True)
  vloss, vcorrect, gv_params, g_u, _ = fns.arch_grads(params, new_stats, u_full, run, xv, yv,
                                                      k_noise2)
  corr = None
  if fns.correction is not None:  # second-order, amended or implicit hypergradient
    corr = fns.correction(params, new_stats, state["arch"], masks, (x, y), (xv, yv), gv_params,
                          g_u, k_noise2, state["step"])
  arch, arch_opt_state = fns.arch_update(state["arch"], state["arch_opt_state"], g_u, masks,
                                         k_arch, corr, state["step"])
  new_state = dict(state, step=state["step"] + 1, params=params, batch_stats=new_stats,
                   opt_state=opt_state, arch=arch, arch_opt_state=arch_opt_state)
  return new_state, jnp.stack([loss, correct, vloss, vcorrect]).astype(jnp.float32)


def arch_first_step(search: Search, fns: StepFunctions, state: PyTree, train_data, val_data,
                    train_idx, val_idx) -> tuple[PyTree, jax.Array]:
  """DARTS Alg. 1 (and DrNAS's released loop): the architecture step from the
  current weights (DARTS's unrolled model starts there, eq. 7), then the
  weight step at the updated architecture.  Batch statistics pass through
  both forward passes, as PyTorch's running statistics do."""
  k_tr, k_val, k_noise1, k_noise2, k_arch, k_arch2 = _keys(state)
  b = search.config.batch_size
  masks = live_masks(search, state)
  x, y = fns.prepare(*train_data, train_idx, k_tr, True)
  xv, yv = fns.prepare(*val_data, val_idx, k_val, True)
  u_val = fns.full_weights(state["arch"], masks, k_arch, b, state["step"])
  vloss, vcorrect, gv_params, g_u, stats = fns.arch_grads(
      state["params"], state["batch_stats"], u_val,
      _run_masks(fns, state["arch"], masks, k_arch, state["step"]), xv, yv, k_noise2)
  corr = None
  if fns.correction is not None:
    corr = fns.correction(state["params"], state["batch_stats"], state["arch"], masks, (x, y),
                          (xv, yv), gv_params, g_u, k_noise2, state["step"])
  arch, arch_opt_state = fns.arch_update(state["arch"], state["arch_opt_state"], g_u, masks,
                                         k_arch, corr, state["step"])
  masks = live_masks(search, {"arch_opt_state": arch_opt_state})
  u_train = (fns.full_weights(arch, masks, k_arch2, b, state["step"])
             if fns.perturbed_weights is None else fns.perturbed_weights(
                 state["params"], stats, arch, masks, x, y, k_arch2, b, state["step"]))
  loss, correct, g_params, _, new_stats = fns.weight_grads(
      state["params"], stats, u_train, _run_masks(fns, arch, masks, k_arch2, state["step"]),
      x, y, k_noise1)
  params, opt_state = fns.weight_update(state["params"], state["opt_state"], g_params, b)
  new_state = dict(state, step=state["step"] + 1, params=params, batch_stats=new_stats,
                   opt_state=opt_state, arch=arch, arch_opt_state=arch_opt_state)
  return new_state, jnp.stack([loss, correct, vloss, vcorrect]).astype(jnp.float32)


def _run_masks(fns: StepFunctions, arch, masks, key, step):
  return masks if fns.run_masks is None else fns.run_masks(arch, masks, key, step)


STEP_ORDERS = {WEIGHTS_FIRST: weights_first_step, ARCH_FIRST: arch_first_step}


def search_step(search: Search, fns: StepFunctions, state: PyTree, train_data, val_data,
                train_idx, val_idx) -> tuple[PyTree, jax.Array]:
  """One weight step and one architecture step, in the order of the search's
  optimizer (``ArchOptimizer.step_order``); returns the step's metrics
  ``[train_loss_sum, train_correct, val_loss_sum, val_correct]`` (on device)."""
  return STEP_ORDERS[search.arch_opt.step_order](search, fns, state, train_data, val_data,
                                                 train_idx, val_idx)
