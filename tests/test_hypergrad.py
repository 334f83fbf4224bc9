"""Hypergradients against dense Hessians, unrolled autodiff and closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from xnas_jax import hypergrad

LAM = 0.1


# --- problem 1: ridge regression whose features are a two-expert mixture ----

def ridge_problem(seed=0, n=12, d=4):
  k = jax.random.split(jax.random.key(seed), 4)
  x_tr, x_val = jax.random.normal(k[0], (n, d)), jax.random.normal(k[1], (n, d))
  w_true = jax.random.normal(k[2], (d,))
  y = lambda x: jnp.tanh(x) @ w_true + 0.1 * jnp.sin(x[:, 0])

  def features(u, x):  # the mixed op: u_1 * linear(x) + u_2 * tanh(x)
    return u[0] * x + u[1] * jnp.tanh(x)

  def loss(w, u, batch):
    x, t = batch
    return 0.5 * jnp.mean((features(u, x) @ w - t) ** 2) + 0.5 * LAM * jnp.sum(w ** 2)

  def w_star(u):  # closed-form argmin of the training loss
    f = features(u, x_tr)
    n_ = f.shape[0]
    return jnp.linalg.solve(f.T @ f / n_ + LAM * jnp.eye(d), f.T @ y(x_tr) / n_)

  u = jnp.array([0.6, 0.4])
  return loss, w_star, u, (x_tr, y(x_tr)), (x_val, y(x_val))


# --- problem 2: a tiny MLP supernet (softmax over two activations) -----------

def mlp_problem(seed=0):
  k = jax.random.split(jax.random.key(seed), 5)
  weights = {"w1": 0.5 * jax.random.normal(k[0], (3, 4)), "w2": 0.5 * jax.random.normal(k[1], (4,))}
  arch = jnp.array([0.3, -0.2])
  x_tr, x_val = jax.random.normal(k[2], (16, 3)), jax.random.normal(k[3], (16, 3))
  target = lambda x: jnp.sin(x[:, 0]) - x[:, 1] * x[:, 2]

  def loss(w, a, batch):
    x, t = batch
    u = jax.nn.softmax(a)
    h = x @ w["w1"]
    hidden = u[0] * jnp.tanh(h) + u[1] * jax.nn.softplus(h)
    return 0.5 * jnp.mean((hidden @ w["w2"] - t) ** 2) + 0.5 * 1e-2 * sum(
        jnp.sum(p ** 2) for p in jax.tree.leaves(w))

  return loss, weights, arch, (x_tr, target(x_tr)), (x_val, target(x_val))


def problem_named(name):
  """``(loss, weights, arch, train_batch, val_batch)`` of a test problem."""
  if name == "ridge":
    loss, _, a, tr, val = ridge_problem()
    return loss, jnp.ones(4) * 0.3, a, tr, val
  return mlp_problem()


def dense_parts(train_loss, val_loss, w, a, tr, val):
  """Flattened g1, v = dL_val/dw, H and the mixed matrix M[i, j] = d2 L / dw_i da_j."""
  flat_w, unravel = ravel_pytree(w)
  lt = lambda fw, a: train_loss(unravel(fw), a, tr)
  lv = lambda fw, a: val_loss(unravel(fw), a, val)
  hess = jax.hessian(lt)(flat_w, a)
  mixed = jax.jacfwd(jax.grad(lt), argnums=1)(flat_w, a)
  g1 = jax.grad(lv, argnums=1)(flat_w, a)
  v = jax.grad(lv)(flat_w, a)
  return g1, v, hess, mixed, flat_w, unravel


@pytest.mark.parametrize("problem", ["ridge", "mlp"])
def test_all_methods_match_dense_formulas(problem):
  loss, w, a, tr, val = problem_named(problem)
  g1, v, hess, mixed, _, _ = dense_parts(loss, loss, w, a, tr, val)
  np.testing.assert_allclose(hypergrad.first_order(loss, w, a, val), g1, rtol=1e-5, atol=1e-7)

  eta = 0.1
  amended = hypergrad.amended(loss, loss, w, a, tr, val, coefficient=eta)
  np.testing.assert_allclose(amended, g1 - eta * mixed.T @ hess @ v, rtol=1e-4, atol=1e-6)

  damping = 0.05 + max(0.0, -float(jnp.linalg.eigvalsh(hess)[0]))
  dim = hess.shape[0]
  implicit = hypergrad.implicit(loss, loss, w, a, tr, val, maxiter=4 * dim, damping=damping)
  dense = g1 - mixed.T @ jnp.linalg.solve(hess + damping * jnp.eye(dim), v)
  np.testing.assert_allclose(implicit, dense, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("problem", ["ridge", "mlp"])
def test_darts_second_order_is_the_gradient_through_one_unrolled_step(problem):
  loss, w, a, tr, val = problem_named(problem)
  xi = 0.05

  def unrolled(a):  # differentiate through w' = w - xi grad_w L_train(w, a)
    g = jax.grad(loss)(w, a, tr)
    return loss(jax.tree.map(lambda p, q: p - xi * q, w, g), a, val)

  truth = jax.grad(unrolled)(a)
  exact = hypergrad.darts_second_order(loss, loss, w, a, tr, val, inner_lr=xi)
  np.testing.assert_allclose(exact, truth, rtol=1e-4, atol=1e-6)
  fd = hypergrad.darts_second_order(loss, loss, w, a, tr, val, inner_lr=xi, exact=False)
  np.testing.assert_allclose(fd, exact, rtol=2e-3, atol=2e-5)


def test_implicit_at_the_optimum_is_the_true_hypergradient():
  loss, w_star, u, tr, val = ridge_problem()
  truth = jax.grad(lambda u: loss(w_star(u), u, val))(u)
  got = hypergrad.implicit(loss, loss, w_star(u), u, tr, val, maxiter=50, damping=0.0)
  np.testing.assert_allclose(got, truth, rtol=1e-3, atol=1e-5)
  # The first-order gradient misses g2 by a clear margin here.
  assert float(jnp.linalg.norm(hypergrad.first_order(loss, w_star(u), u, val) - truth)) > 1e-3
  neumann = hypergrad.implicit(loss, loss, w_star(u), u, tr, val, maxiter=500, damping=0.0,
                               solver="neumann", neumann_lr=0.3)
  np.testing.assert_allclose(neumann, truth, rtol=1e-2, atol=1e-4)


def test_pytree_weights_and_arch_keep_their_structure():
  loss, w, a, tr, val = mlp_problem()
  arch = {"normal": a, "reduce": a[::-1]}
  tree_loss = lambda w, arch, b: loss(w, arch["normal"], b) + 0.5 * loss(w, arch["reduce"], b)
  for method in hypergrad.METHODS:
    opts = {"darts_second_order": {"inner_lr": 0.01}}.get(method, {})
    g = hypergrad.hypergradient(method, tree_loss, tree_loss, w, arch, tr, val, **opts)
    assert jax.tree.structure(g) == jax.tree.structure(arch)
  with pytest.raises(ValueError, match="'second'"):
    hypergrad.hypergradient("second", tree_loss, tree_loss, w, arch, tr, val)


def quadratic(h, m, v):
  """A bilevel problem with given H, mixed matrix M and dL_val/dw = v at w = 0:
  L_train = 1/2 w'Hw + a'M'w, L_val = v'w."""
  train = lambda w, a, _: 0.5 * w @ h @ w + a @ (m.T @ w)
  val = lambda w, a, _: v @ w
  return train, val


def test_amended_term_agrees_in_direction_only_where_the_paper_assumes():
  """Bi et al. (eq. 8) claim <g2', g2> >= 0 for any positive-definite H; the
  step "similarity transformation keeps semi-definiteness" does not hold for a
  quadratic form (H^-1 M M' H is not symmetric).  Both sides checked here."""
  w0, a0 = jnp.zeros(2), jnp.zeros(2)

  def g2_pair(h, m, v):
    train, val = quadratic(h, m, v)
    g1 = hypergrad.first_order(val, w0, a0, None)
    g2 = hypergrad.implicit(train, val, w0, a0, None, None, maxiter=10, damping=0.0) - g1
    g2_amended = hypergrad.amended(train, val, w0, a0, None, None, coefficient=1.0) - g1
    g2_darts = -(m.T @ v)  # DARTS's term at w' = w: -xi M' v with xi = 1
    return g2, g2_amended, g2_darts

  # A positive-definite counterexample: the amended term points away from g2.
  h, m, v = jnp.diag(jnp.array([1.0, 100.0])), jnp.ones((2, 2)), jnp.array([1.0, -1.0])
  g2, g2a, _ = g2_pair(h, m, v)
  assert float(g2a @ g2) < 0
  # Where H commutes with M M' (here H = c I, or M M' = I), the claim holds.
  rng = np.random.default_rng(0)
  for _ in range(20):
    m = jnp.asarray(rng.normal(size=(2, 2)))
    v = jnp.asarray(rng.normal(size=2))
    g2, g2a, g2d = g2_pair(3.0 * jnp.eye(2), m, v)
    assert float(g2a @ g2) >= 0 and float(g2d @ g2) >= 0
    q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    ev = np.diag(np.exp(rng.normal(size=2)))
    g2, g2a, _ = g2_pair(jnp.asarray(q @ ev @ q.T), jnp.asarray(np.linalg.qr(m)[0]), v)
    assert float(g2a @ g2) >= -1e-6


def test_mixed_term_by_vjp_equals_by_jvp():
  loss, w, a, tr, _ = mlp_problem()
  v = jax.tree.map(jnp.ones_like, w)
  by_vjp = hypergrad.mixed_vjp(loss, w, a, tr, v, mode="vjp")
  by_jvp = hypergrad.mixed_vjp(loss, w, a, tr, v, mode="jvp")
  np.testing.assert_allclose(by_vjp, by_jvp, rtol=1e-5, atol=1e-7)
