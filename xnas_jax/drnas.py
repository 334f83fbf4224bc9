"""DrNAS: architecture weights as Dirichlet samples (Chen et al., 2021;
R. Wang's thesis, sec. 3.2, eq. 3.2).

The mixture weights of an edge are a sample ``theta ~ Dir(beta)`` whose
concentration is learned; the architecture objective is

    min_beta  E_{theta ~ Dir(beta)} [L_val(w*, theta)] + lambda d(beta, beta_hat),

with ``d`` the KL divergence to a prior ``Dir(beta_hat)`` (DrNAS's released
code: ``beta_hat = 1``, ``lambda = reg_scale``).  The architecture parameter
``b`` is unconstrained; the concentration is ``beta = elu(b) + 1 > 0``.
Samples are reparameterized: ``jax.random.dirichlet`` draws gammas with
implicit-reparameterization gradients, so ``d theta / d b`` exists and the
search differentiates the validation loss through the sample.  Evaluation and
discretization use the mean ``beta / sum(beta)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

ArchParams = dict[str, jax.Array]  # per cell type


def concentration(b: jax.Array) -> jax.Array:
  """``beta = elu(b) + 1``: positive, and ``b = 0`` is the uniform ``Dir(1)``."""
  return jax.nn.elu(b) + 1.0


def sample_weights(key: jax.Array, arch: ArchParams,
                   masks: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """One ``Dir(beta)`` sample per edge over its live experts (reparameterized).

  A Dirichlet restricted to a subset of experts and renormalized is the
  Dirichlet of that subset's concentrations (the gamma construction), so
  masking after sampling draws from the right distribution.
  """
  out, types = {}, sorted(masks)  # one key per cell type, in a fixed order
  for k, t in zip(jax.random.split(key, len(types)), types):
    theta = jax.random.dirichlet(k, concentration(arch[t]))
    theta = jnp.where(masks[t], theta, 0.0)
    out[t] = theta / jnp.sum(theta, axis=-1, keepdims=True)
  return out


def mean_weights(arch: ArchParams, masks: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """``E[theta] = beta / sum(beta)`` over the live experts."""
  out = {}
  for t in masks:
    beta = jnp.where(masks[t], concentration(arch[t]), 0.0)
    out[t] = beta / jnp.sum(beta, axis=-1, keepdims=True)
  return out


def dirichlet_kl(alpha: jax.Array, prior: jax.Array) -> jax.Array:
  """``KL(Dir(alpha) || Dir(prior))`` over the last axis:

  ::

      ln G(a0) - sum ln G(a_i) - ln G(p0) + sum ln G(p_i)
        + sum (a_i - p_i) (psi(a_i) - psi(a0)).
  """
  a0 = jnp.sum(alpha, axis=-1)
  p0 = jnp.sum(prior, axis=-1)
  lg = jax.scipy.special.gammaln
  dg = jax.scipy.special.digamma
  return (lg(a0) - jnp.sum(lg(alpha), -1) - lg(p0) + jnp.sum(lg(prior), -1)
          + jnp.sum((alpha - prior) * (dg(alpha) - dg(a0)[..., None]), -1))


def kl_regularizer(arch: ArchParams, prior: float = 1.0) -> jax.Array:
  """``sum over edges and cell types of KL(Dir(beta) || Dir(prior))``."""
  return sum(jnp.sum(dirichlet_kl(concentration(arch[t]),
                                  jnp.full_like(arch[t], prior))) for t in arch)
