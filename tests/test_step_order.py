"""Each optimizer's step order: DARTS's Algorithm 1 takes the architecture
step first (in a file of its own, so that xdist runs it beside the other
second-order tests)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from search_configs import FEW_OPS_WITH_NONE, tiny_config
from xnas_jax import arch as arch_lib
from xnas_jax import search_setup
from xnas_jax import search_steps

pytestmark = pytest.mark.usefixtures("no_persistent_cache")


def test_a_darts_step_is_darts_algorithm_1_in_its_order():
  """DARTS Alg. 1 takes the architecture step first, from the weights before
  the weight step: ``alpha' = Adam(grad_alpha L_val(w - xi grad_w L_train(w, alpha), alpha))``,
  then the weight step at ``alpha'``.  Checked against autodiff through the
  unrolled step (not the library's hypergradient code)."""
  config = tiny_config(arch_gradient="darts_second_order", op_set=FEW_OPS_WITH_NONE)
  config.arch_optimizer.name = "darts_adam"
  config.hypergrad.inner_lr = 0.05
  search = search_setup.build_search(config)
  fns = search_steps.step_functions(search)
  state = search_setup.init_state(search, jax.random.key(0))
  state["arch"] = jax.tree.map(
      lambda a: a + jax.random.normal(jax.random.key(5), a.shape), state["arch"])
  d, b = search.data, config.batch_size
  data = lambda split: tuple(jnp.asarray(a) for a in (split.images, split.labels, d.mean, d.std))
  tr, va = jnp.arange(b), jnp.arange(b) + b
  # The batches the step draws (same keys), to compute the reference on.
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state["data_key"]), state["step"])
  k_tr, k_val, _, _ = jax.random.split(step_key, 4)
  train_batch = fns.prepare(*data(d.train), tr, k_tr, True)
  val_batch = fns.prepare(*data(d.val), va, k_val, True)
  masks = search_setup.live_masks(search, state)
  w0, a0, stats = state["params"], state["arch"], state["batch_stats"]

  def loss(w, alpha, batch):
    logits, _ = search.net.apply({"params": w, "batch_stats": stats}, batch[0],
                                 arch_lib.mixture_weights(alpha, masks), masks, train=True,
                                 rng=jax.random.key(0))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]))

  def unrolled_val_loss(alpha):
    w1 = jax.tree.map(lambda w, g: w - 0.05 * g, w0, jax.grad(loss)(w0, alpha, train_batch))
    return loss(w1, alpha, val_batch)

  g_alpha = jax.jit(jax.grad(unrolled_val_loss))(a0)
  updates, _ = search.arch_opt.tx.update(g_alpha, state["arch_opt_state"], a0)
  expect_arch = optax.apply_updates(a0, updates)
  g_w = jax.jit(jax.grad(loss))(w0, expect_arch, train_batch)
  updates, _ = search.weight_tx.update(g_w, state["opt_state"], w0)
  expect_params = optax.apply_updates(w0, updates)

  new, _ = search_steps.search_step(search, fns, jax.tree.map(jnp.copy, state), data(d.train),
                                    data(d.val), tr, va)
  for t in ("normal", "reduce"):
    assert float(jnp.abs(new["arch"][t] - a0[t]).max()) > 1e-5
    np.testing.assert_allclose(new["arch"][t], expect_arch[t], rtol=1e-4, atol=1e-6)
  for got, want in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(expect_params)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
