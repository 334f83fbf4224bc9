"""The bfloat16 compute mode: the gradient program against float32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import search_setup
from xnas_jax import search_steps
from xnas_jax import train
from search_configs import gradient_program_args, tiny_config


def _cosine(a, b):
  a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)]).astype(np.float64)
  b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)]).astype(np.float64)
  return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def test_bfloat16_gradients_match_float32_and_come_back_in_float32():
  search = search_setup.build_search(tiny_config())
  state = search_setup.init_state(search, jax.random.key(0))
  args = gradient_program_args(search, state)
  ref = jax.jit(search_steps.loss_and_grads_fn(search.net))(*args)
  low = jax.jit(search_steps.loss_and_grads_fn(search.net, "bfloat16"))(*args)
  assert float(low[0]) == pytest.approx(float(ref[0]), rel=2e-2)
  # bfloat16 rounding moves near-zero ReLU inputs and near-tied max-pool
  # windows to the other side, whose gradients then differ outright: the
  # gradient error is ~ sqrt(fraction flipped), about 10% in norm here.
  assert _cosine(low[2], ref[2]) > 0.98  # weight gradient
  assert _cosine(low[3], ref[3]) > 0.98  # rewards
  for a, r in zip(jax.tree.leaves(low[2:]), jax.tree.leaves(ref[2:])):
    assert a.dtype == r.dtype and a.shape == r.shape


def test_a_bfloat16_supernet_takes_float32_mixture_weights_and_stays_bfloat16():
  # The mixed op sums u_i f_i(x) in u's dtype: the rewards -grad_u . f_i are
  # float32 reductions even when the experts run in bfloat16.
  search = search_setup.build_search(tiny_config())
  state = search_setup.init_state(search, jax.random.key(0))
  net, b = search.net, 4
  x = jnp.asarray(search.data.train.images[:b], jnp.bfloat16)
  masks = net.default_masks()
  u = search_steps.per_copy_weights(net, search.mixture(state["arch"], masks), b)
  params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), state["params"])

  def out(u):
    logits, _ = net.apply({"params": params, "batch_stats": state["batch_stats"]}, x, u, masks,
                          train=True, rng=jax.random.key(1))
    return logits

  assert out(u).dtype == jnp.bfloat16
  g_u = jax.grad(lambda u: jnp.sum(out(u).astype(jnp.float32) ** 2))(u)
  assert all(g.dtype == jnp.float32 for g in g_u.values())
  assert all(float(jnp.abs(g).max()) > 0 for g in g_u.values())


def test_unknown_compute_dtype_is_named():
  with pytest.raises(train.ConfigError, match="'float16'"):
    train.validate_config(tiny_config(compute_dtype="float16"))
