"""The bfloat16 compute mode: the gradient program against float32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnas_jax import train
from search_configs import tiny_config


def _cosine(a, b):
  a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)]).astype(np.float64)
  b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)]).astype(np.float64)
  return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def test_bfloat16_gradients_match_float32_and_come_back_in_float32():
  search = train.build_search(tiny_config())
  state = train.init_state(search, jax.random.key(0))
  d, b = search.data, 16
  x = (jnp.asarray(d.train.images[:b]) - d.mean) / d.std
  y = jnp.asarray(d.train.labels[:b])
  masks = search.net.default_masks()
  u = train.per_copy_weights(search.net, search.mixture(state["arch"], masks), b)
  args = (state["params"], state["batch_stats"], u, masks, x, y, jax.random.key(1))
  ref = jax.jit(train.loss_and_grads_fn(search.net))(*args)
  low = jax.jit(train.loss_and_grads_fn(search.net, "bfloat16"))(*args)
  assert float(low[0]) == pytest.approx(float(ref[0]), rel=2e-2)
  assert _cosine(low[2], ref[2]) > 0.99  # weight gradient
  assert _cosine(low[3], ref[3]) > 0.98  # rewards
  for a, r in zip(jax.tree.leaves(low[2:]), jax.tree.leaves(ref[2:])):
    assert a.dtype == r.dtype and a.shape == r.shape


def test_unknown_compute_dtype_is_named():
  with pytest.raises(train.ConfigError, match="'float16'"):
    train.validate_config(tiny_config(compute_dtype="float16"))
