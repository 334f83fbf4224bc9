"""Architecture hypergradients: first order, DARTS second order, amended, implicit.

The bilevel problem of differentiable NAS is ``min_a L_val(w*(a), a)`` with
``w*(a) = argmin_w L_train(w, a)``.  Its exact gradient (Bi et al., eq. 6,
the implicit function theorem applied to ``grad_w L_train(w*(a), a) = 0``) is

    g = g1 + g2,   g1 = dL_val/da,   g2 = -(d2 L_train / da dw) H^-1 dL_val/dw,

with ``H = d2 L_train / dw2``.  The estimators here differ in how they treat
``g2``:

* ``first_order`` drops it (DARTS first order, XNAS);
* ``darts_second_order`` differentiates through one SGD step
  ``w' = w - xi grad_w L_train`` (DARTS eq. 7-8): ``H^-1`` is replaced by
  ``xi I`` and the gradients are taken at ``w'``;
* ``amended`` replaces ``H^-1`` by ``eta H`` (Bi et al., eq. 7);
* ``implicit`` solves ``(H + damping I) x = dL_val/dw`` by conjugate gradient
  (or a truncated Neumann series).

Losses are functions ``loss(weights, arch, batch) -> scalar`` over pytrees.
No Hessian is ever materialized: ``H v`` is a jvp of the weight gradient
(forward-over-reverse), and the mixed term ``(d2 L / da dw) v`` is a vjp of
the weight gradient w.r.t. ``arch``.  Each function returns a pytree shaped
like ``arch``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from xnas_jax import config_checks

PyTree = Any
Loss = Callable[[PyTree, PyTree, Any], jax.Array]

METHODS = ("first_order", "darts_second_order", "amended", "implicit")


def _axpy(a: float | jax.Array, x: PyTree, y: PyTree) -> PyTree:
  """``a * x + y`` over pytrees."""
  return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def mixed_vjp(train_loss: Loss, weights: PyTree, arch: PyTree, batch: Any, v: PyTree,
              mode: str = "jvp") -> PyTree:
  """``(d2 L_train / da dw) . v``, shaped like ``arch``.

  ``mode="vjp"``: a vjp w.r.t. ``arch`` of ``grad_w L_train`` (reverse over
  reverse).  ``mode="jvp"`` (default): the same matrix-vector product by the
  symmetry of mixed partials, as the jvp of ``grad_a L_train`` along ``v``
  (forward over reverse), which XLA compiles and runs faster.
  """
  if mode == "vjp":
    _, vjp = jax.vjp(lambda a: jax.grad(train_loss)(weights, a, batch), arch)
    return vjp(v)[0]
  if mode == "jvp":
    return jax.jvp(lambda w: jax.grad(train_loss, argnums=1)(w, arch, batch), (weights,), (v,))[1]
  raise ValueError(f"unknown mode {mode!r}; expected 'jvp' or 'vjp'")


def hessian_vector_product(train_loss: Loss, weights: PyTree, arch: PyTree, batch: Any,
                           v: PyTree) -> PyTree:
  """``H v`` with ``H = d2 L_train / dw2``: a jvp of the weight gradient."""
  return jax.jvp(lambda w: jax.grad(train_loss)(w, arch, batch), (weights,), (v,))[1]


def first_order(val_loss: Loss, weights: PyTree, arch: PyTree, val_batch: Any) -> PyTree:
  """``g1 = dL_val(w, a)/da`` (DARTS first order; XNAS's reward is its negative)."""
  return jax.grad(val_loss, argnums=1)(weights, arch, val_batch)


def darts_second_order(train_loss: Loss, val_loss: Loss, weights: PyTree, arch: PyTree,
                       train_batch: Any, val_batch: Any, *, inner_lr: float,
                       exact: bool = True, epsilon: float = 0.01) -> PyTree:
  """DARTS's unrolled gradient (Liu et al., eq. 7-8).

  ``dL_val(w', a)/da - xi (d2 L_train(w, a) / da dw) . dL_val(w', a)/dw'``
  with ``w' = w - xi grad_w L_train(w, a)`` and ``xi = inner_lr``.

  The mixed term is taken at ``w`` (where the unrolled step starts), either
  exactly (a vjp) or, with ``exact=False``, by DARTS's central finite
  difference ``(grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps)``,
  ``w+- = w +- eps v``, ``eps = epsilon / ||v||`` (eq. 8).
  """
  g_train = jax.grad(train_loss)(weights, arch, train_batch)
  w_unrolled = _axpy(-inner_lr, g_train, weights)
  g_arch, v = jax.grad(val_loss, argnums=(1, 0))(w_unrolled, arch, val_batch)
  if exact:
    mixed = mixed_vjp(train_loss, weights, arch, train_batch, v)
  else:
    eps = epsilon / jnp.maximum(optax.tree_utils.tree_norm(v), 1e-12)
    grad_a = jax.grad(train_loss, argnums=1)
    plus = grad_a(_axpy(eps, v, weights), arch, train_batch)
    minus = grad_a(_axpy(-eps, v, weights), arch, train_batch)
    mixed = jax.tree.map(lambda p, m: (p - m) / (2 * eps), plus, minus)
  return _axpy(-inner_lr, mixed, g_arch)


def amended_term(train_loss: Loss, weights: PyTree, arch: PyTree, train_batch: Any,
                 val_weight_grad: PyTree, *, coefficient: float = 0.1) -> PyTree:
  """Bi et al.'s ``g2' = -eta (d2 L_train / da dw) H dL_val/dw`` (eq. 7), given
  ``val_weight_grad = dL_val/dw`` (which a search step has already computed)."""
  hv = hessian_vector_product(train_loss, weights, arch, train_batch, val_weight_grad)
  return jax.tree.map(lambda m: -coefficient * m,
                      mixed_vjp(train_loss, weights, arch, train_batch, hv))


def amended(train_loss: Loss, val_loss: Loss, weights: PyTree, arch: PyTree,
            train_batch: Any, val_batch: Any, *, coefficient: float = 0.1) -> PyTree:
  """Bi et al.'s amended gradient (eq. 6-7): ``g1 - eta (d2 L_train / da dw) H dL_val/dw``.

  ``eta = coefficient`` (the "amending coefficient"); every term at ``w``.
  """
  g1, v = jax.grad(val_loss, argnums=(1, 0))(weights, arch, val_batch)
  return _axpy(1.0, amended_term(train_loss, weights, arch, train_batch, v,
                                 coefficient=coefficient), g1)


def inverse_hvp(train_loss: Loss, weights: PyTree, arch: PyTree, batch: Any, v: PyTree, *,
                maxiter: int = 20, damping: float = 0.0, solver: str = "cg",
                neumann_lr: float = 0.01) -> PyTree:
  """``(H + damping I)^-1 v`` by conjugate gradient or a Neumann series.

  The weight gradient is linearized once (``jax.linearize``), so each
  iteration costs one jvp.  The Neumann series is
  ``neumann_lr * sum_{k=0}^{maxiter} (I - neumann_lr (H + damping I))^k v``,
  which converges for ``0 < neumann_lr < 2 / lambda_max``.
  """
  _, hvp = jax.linearize(lambda w: jax.grad(train_loss)(w, arch, batch), weights)

  def matvec(x):
    return _axpy(damping, x, hvp(x))

  if solver == "cg":
    x, _ = jax.scipy.sparse.linalg.cg(matvec, v, maxiter=maxiter)
    return x
  if solver == "neumann":
    def body(_, carry):
      term, total = carry
      term = _axpy(-neumann_lr, matvec(term), term)
      return term, _axpy(1.0, term, total)
    _, total = jax.lax.fori_loop(0, maxiter, body, (v, v))
    return jax.tree.map(lambda t: neumann_lr * t, total)
  raise ValueError(f"unknown solver {solver!r}; expected 'cg' or 'neumann'")


def implicit_term(train_loss: Loss, weights: PyTree, arch: PyTree, train_batch: Any,
                  val_weight_grad: PyTree, *, maxiter: int = 20, damping: float = 1e-3,
                  solver: str = "cg", neumann_lr: float = 0.01) -> PyTree:
  """``g2 = -(d2 L_train / da dw) (H + damping I)^-1 dL_val/dw`` (eq. 6), given
  ``val_weight_grad = dL_val/dw``."""
  x = inverse_hvp(train_loss, weights, arch, train_batch, val_weight_grad, maxiter=maxiter,
                  damping=damping, solver=solver, neumann_lr=neumann_lr)
  return jax.tree.map(jnp.negative, mixed_vjp(train_loss, weights, arch, train_batch, x))


def implicit(train_loss: Loss, val_loss: Loss, weights: PyTree, arch: PyTree,
             train_batch: Any, val_batch: Any, *, maxiter: int = 20, damping: float = 1e-3,
             solver: str = "cg", neumann_lr: float = 0.01) -> PyTree:
  """The implicit-function hypergradient (Bi et al., eq. 6):
  ``g1 - (d2 L_train / da dw) (H + damping I)^-1 dL_val/dw``.

  Exact for ``damping = 0`` at a minimum of ``L_train`` when the solver has
  converged; the damping keeps conjugate gradient well-posed where ``H`` is
  indefinite (a supernet away from its optimum).
  """
  g1, v = jax.grad(val_loss, argnums=(1, 0))(weights, arch, val_batch)
  return _axpy(1.0, implicit_term(train_loss, weights, arch, train_batch, v, maxiter=maxiter,
                                  damping=damping, solver=solver, neumann_lr=neumann_lr), g1)


def hypergradient(method: str, train_loss: Loss, val_loss: Loss, weights: PyTree, arch: PyTree,
                  train_batch: Any, val_batch: Any, **options) -> PyTree:
  """Dispatches to one of ``METHODS`` by name (options as in each function)."""
  if method == "first_order":
    return first_order(val_loss, weights, arch, val_batch)
  fns = {"darts_second_order": darts_second_order, "amended": amended, "implicit": implicit}
  if method not in fns:
    raise ValueError(f"unknown arch_gradient {method!r}; expected one of {list(METHODS)}")
  return fns[method](train_loss, val_loss, weights, arch, train_batch, val_batch, **options)


# --------------------------------------------------------------------------
# The search's view: what an estimator adds to the first-order gradient it
# already has, and the config section ``hypergrad``.

def _darts_correction(loss, weights, arch, train_batch, val_batch, val_weight_grad,
                      first_order_grad, **options):
  del val_weight_grad
  return jax.tree.map(jnp.subtract, darts_second_order(loss, loss, weights, arch, train_batch,
                                                       val_batch, **options), first_order_grad)


def _amended_correction(loss, weights, arch, train_batch, val_batch, val_weight_grad,
                        first_order_grad, **options):
  del val_batch, first_order_grad
  return amended_term(loss, weights, arch, train_batch, val_weight_grad, **options)


def _implicit_correction(loss, weights, arch, train_batch, val_batch, val_weight_grad,
                         first_order_grad, **options):
  del val_batch, first_order_grad
  return implicit_term(loss, weights, arch, train_batch, val_weight_grad, **options)


# ``correction(loss, weights, arch, train_batch, val_batch, val_weight_grad,
# first_order_grad, **options)``: the estimator's gradient minus the first
# order one, given the gradients of the mean validation loss the search has
# already computed w.r.t. the weights (``val_weight_grad``) and ``arch``.
CORRECTIONS = {"darts_second_order": _darts_correction, "amended": _amended_correction,
               "implicit": _implicit_correction}

RULES = (("hypergrad.inner_lr", "optional_positive"), ("hypergrad.exact", "bool"),
         ("hypergrad.epsilon", "positive"), ("hypergrad.coefficient", "positive"),
         ("hypergrad.maxiter", "positive_int"), ("hypergrad.damping", "nonnegative"),
         ("hypergrad.neumann_lr", "positive"))


def validate(config: ml_collections.ConfigDict, error: type = config_checks.ConfigError) -> None:
  """Checks ``config.arch_gradient`` and ``config.hypergrad``."""
  config_checks.check_choice(config, "arch_gradient", METHODS, error)
  config_checks.check_choice(config, "hypergrad.solver", ("cg", "neumann"), error)
  config_checks.check(config, RULES, error)


def options(config: ml_collections.ConfigDict, weight_lr: jax.Array) -> dict[str, Any]:
  """The keyword options of ``config.arch_gradient``'s estimator; DARTS's
  ``xi`` defaults to the weight learning rate of the step."""
  h = config.hypergrad
  return {
      "first_order": {},
      "darts_second_order": {"inner_lr": weight_lr if h.inner_lr is None else h.inner_lr,
                             "exact": h.exact, "epsilon": h.epsilon},
      "amended": {"coefficient": h.coefficient},
      "implicit": {"maxiter": h.maxiter, "damping": h.damping, "solver": h.solver,
                   "neumann_lr": h.neumann_lr},
  }[config.arch_gradient]
