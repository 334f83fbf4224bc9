"""The search with a second-order architecture gradient (amended, XNAS)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from search_configs import FEW_OPS, tiny_config
from xnas_jax import search_setup
from xnas_jax import search_steps
from xnas_jax import arch as arch_lib
from xnas_jax import hypergrad, train


pytestmark = pytest.mark.usefixtures("no_persistent_cache")


def _loop_correction_and_reference(config, state, reference):
  """The loop's jitted correction on one train and one val batch of ``state``,
  and ``reference(loss, weights, a, train_batch, val_batch) - first_order``
  computed directly on the same loss (``a``: ``u`` for XNAS, else the logits)."""
  search = search_setup.build_search(config)
  fns = search_steps.step_functions(search)
  d, b = search.data, config.batch_size
  x, y = jnp.asarray(d.train.images[:b]), jnp.asarray(d.train.labels[:b])
  xv, yv = jnp.asarray(d.val.images[:b]), jnp.asarray(d.val.labels[:b])
  masks = search_setup.live_masks(search, state)
  key = jax.random.key(3)
  _, _, gv, gu, _ = fns.grads(state["params"], state["batch_stats"],
                                 fns.full_weights(state["arch"], masks, key, b), masks, xv, yv,
                                 key)
  corr = fns.correction(state["params"], state["batch_stats"], state["arch"], masks, (x, y),
                           (xv, yv), gv, gu, key, state["step"])
  mixture = config.arch_optimizer.name == "xnas"

  def loss(p, a, batch):
    u = a if mixture else arch_lib.mixture_weights(a, masks)
    logits, _ = search.net.apply({"params": p, "batch_stats": state["batch_stats"]}, batch[0], u,
                                 masks, train=True, rng=key)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]))

  a0 = arch_lib.mixture_weights(state["arch"], masks) if mixture else state["arch"]
  expect = jax.jit(lambda p, a: jax.tree.map(
      jnp.subtract, reference(loss, p, a, (x, y), (xv, yv)),
      hypergrad.first_order(loss, p, a, (xv, yv))))(state["params"], a0)
  return corr, expect


def test_amended_search_runs_and_its_correction_is_bi_et_al_eq_7(tmp_path):
  config = tiny_config(arch_gradient="amended", epochs=1, op_set=FEW_OPS)
  config.hypergrad.coefficient = 0.5
  result = train.train_and_evaluate(config, str(tmp_path), progress=False)
  assert np.isfinite(result["summary"]["val_loss"])
  assert len(result["genotype"].normal) == 8

  # The search's correction (which reuses the gradient program's summed-loss
  # weight gradient) equals amended(...) - first_order(...) on the same loss.
  corr, expect = _loop_correction_and_reference(
      config, result["state"],
      lambda loss, p, u, tr, va: hypergrad.amended(loss, loss, p, u, tr, va, coefficient=0.5))
  for t in ("normal", "reduce"):
    assert float(jnp.abs(corr[t]).max()) > 0
    np.testing.assert_allclose(corr[t], expect[t], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("arch_optimizer", ["xnas"])
def test_darts_second_order_correction_is_the_unrolled_gradient_minus_first_order(arch_optimizer):
  # The loop's correction subtracts the first-order gradient it builds from the
  # gradient program's rewards; compare with DARTS's eq. 7 computed directly
  # w.r.t. u (XNAS).  For DARTS (w.r.t. the logits through the softmax) the
  # whole step is checked against autodiff through the unrolled step in
  # tests/test_step_order.py.
  config = tiny_config(arch_gradient="darts_second_order", op_set=FEW_OPS)
  config.arch_optimizer.name = arch_optimizer
  config.hypergrad.inner_lr = 0.05
  state = search_setup.init_state(search_setup.build_search(config), jax.random.key(0))
  state["arch"] = jax.tree.map(  # away from uniform, so the softmax's Jacobian matters
      lambda a: a + jax.random.normal(jax.random.key(5), a.shape), state["arch"])
  corr, expect = _loop_correction_and_reference(
      config, state,
      lambda loss, p, a, tr, va: hypergrad.darts_second_order(loss, loss, p, a, tr, va,
                                                              inner_lr=0.05))
  for t in ("normal", "reduce"):
    assert float(jnp.abs(corr[t]).max()) > 0
    np.testing.assert_allclose(corr[t], expect[t], rtol=1e-3, atol=1e-6)

