"""SDARTS (Chen & Hsieh, ICML 2020): the weight step sees a perturbed architecture.

DARTS's supernet weights are trained at one point ``u = softmax(a)`` of the
simplex, so the validation loss is sharp around it and the discretized
architecture loses accuracy.  SDARTS trains the weights at a perturbed point
``u + delta`` instead (implicitly regularizing the Hessian of the validation
loss w.r.t. the architecture), and keeps DARTS's architecture step.

As the release runs it (xiangning-chen/SmoothDARTS, ``sota/cnn/train_search.py``
and ``attacker/perturb.py``), per weight step, on each cell type's ``[E, N]``
mixture weights (shared by the cells and examples, as the architecture is):

* **RS** (``random``): ``delta ~ U(-eps, eps)`` per weight, then ``project``.
* **ADV** (``adversarial``): PGD on the weight step's training batch at the
  current weights, in evaluation mode (running batch statistics, the
  release's ``model.eval()``): a random start as RS, then ``steps``
  (7) ascent steps ``u += (2 eps / steps) sign(dloss/du)``, each followed by
  clipping ``u - u0`` to ``[-eps, eps]`` and ``project``; if the perturbed
  loss is below the unperturbed one, the unperturbed ``u0`` is kept.
* ``eps`` grows linearly with the epoch: ``eps_min + (eps_max - eps_min) *
  epoch / epochs`` (0-based epoch), from 0.03 to 0.3 as released.
* ``project`` is the release's ``clip``: each edge's weights clamped to
  ``[0, 1]``, an edge whose weights all became 0 gets 1 at its largest
  weight before the clamp, then each edge divided by its sum.

Experts outside ``masks`` (wiped, not in the space) stay exactly 0.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

EPS_MIN, EPS_MAX, PGD_STEPS = 0.03, 0.3, 7  # the release's epsilon_alpha range and PGD steps
KINDS = ("none", "random", "adversarial")


def epsilon(step, steps_per_epoch: int, epochs: int, eps_max: float = EPS_MAX,
            eps_min: float = EPS_MIN):
  """The perturbation radius of ``step``: linear in its (0-based) epoch."""
  epoch = jnp.asarray(step) // steps_per_epoch
  return eps_min + (eps_max - eps_min) * epoch / epochs


def project(u: jax.Array, mask: jax.Array) -> jax.Array:
  """The release's ``clip`` of each edge (last axis) back to the simplex."""
  u = jnp.where(mask, u, 0.0)
  top = jax.nn.one_hot(jnp.argmax(jnp.where(mask, u, -jnp.inf), axis=-1), u.shape[-1],
                       dtype=u.dtype)
  clamped = jnp.clip(u, 0.0, 1.0)
  total = jnp.sum(clamped, axis=-1, keepdims=True)
  clamped = jnp.where(total == 0.0, top, clamped)
  return clamped / jnp.sum(clamped, axis=-1, keepdims=True)


def noise(u: dict[str, jax.Array], masks: dict[str, jax.Array], key: jax.Array,
          eps) -> dict[str, jax.Array]:
  """``delta ~ U(-eps, eps)``, one per mixture weight of each cell type."""
  types = sorted(masks)
  keys = dict(zip(types, jax.random.split(key, len(types))))
  return {t: jax.random.uniform(keys[t], u[t].shape, u[t].dtype, -eps, eps) for t in types}


def random_perturbation(u: dict[str, jax.Array], masks: dict[str, jax.Array], key: jax.Array,
                        eps) -> dict[str, jax.Array]:
  """SDARTS-RS: ``project(u + delta)`` per cell type (``noise``)."""
  delta = noise(u, masks, key, eps)
  return {t: project(u[t] + delta[t], masks[t]) for t in sorted(masks)}


def pgd_perturbation(u: dict[str, jax.Array], masks: dict[str, jax.Array], key: jax.Array, eps,
                     loss: Callable[[dict[str, jax.Array]], jax.Array],
                     steps: int = PGD_STEPS) -> dict[str, jax.Array]:
  """SDARTS-ADV: the release's ``Linf_PGD_alpha`` on ``loss(u)`` (a scalar)."""
  types = sorted(masks)
  u0 = {t: u[t] for t in types}
  lr = 2.0 * eps / steps

  def ascend(_, v):
    g = jax.grad(lambda w: loss(dict(u, **w)))(v)
    return {t: project(u0[t] + jnp.clip(v[t] + lr * jnp.sign(g[t]) - u0[t], -eps, eps),
                       masks[t]) for t in types}

  v = jax.lax.fori_loop(0, steps, ascend, random_perturbation(u0, masks, key, eps))
  keep = loss(u) > loss(dict(u, **v))  # the attack made the loss smaller: no perturbation
  return {t: jnp.where(keep, u0[t], v[t]) for t in types}


def perturbation(kind: str, steps_per_epoch: int, epochs: int, eps_max: float = EPS_MAX,
                 eps_min: float = EPS_MIN, pgd_steps: int = PGD_STEPS) -> Callable | None:
  """``(u, masks, key, step, loss) -> u'``, the mixture weights a weight step
  of ``step`` trains at (``u`` may hold PC-DARTS's edge weights under
  ``"edges"``; they pass unperturbed), or None for ``"none"``."""
  if kind == "none":
    return None
  if kind not in KINDS:
    raise ValueError(f"perturbation {kind!r} is not one of {', '.join(KINDS)}")

  def perturb(u, masks, key, step, loss):
    eps = epsilon(step, steps_per_epoch, epochs, eps_max, eps_min)
    if kind == "random":
      return dict(u, **random_perturbation(u, masks, key, eps))
    return dict(u, **pgd_perturbation(u, masks, key, eps, loss, pgd_steps))

  return perturb
