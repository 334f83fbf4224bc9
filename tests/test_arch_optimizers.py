"""One suite over every registered architecture optimizer (as optax's
``contrib/_common_test.py`` runs every optimizer through the same checks):
a search step, finite results, shapes and masks, a checkpoint round trip."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_configs import FEW_OPS, tiny_config
from xnas_jax import arch_optimizers
from xnas_jax import checkpointing
from xnas_jax import optim
from xnas_jax import search_setup
from xnas_jax import search_steps
from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's


@pytest.mark.parametrize("name", arch_optimizers.names())
def test_every_optimizer_takes_a_search_step(name, tmp_path):
  config = tiny_config(op_set=FEW_OPS)
  config.arch_optimizer.name = name
  search = search_setup.build_search(config)
  opt = search.arch_opt
  assert opt.step_order in search_steps.STEP_ORDERS
  assert opt.gradient_wrt in (optim.GRADIENT_WRT_MIXTURE, optim.GRADIENT_WRT_LOGITS)
  state = search_setup.init_state(search, jax.random.key(0))
  before = jax.tree.map(np.asarray, state)
  d, b = search.data, config.batch_size
  data = lambda split: tuple(jnp.asarray(a) for a in (split.images, split.labels, d.mean, d.std))
  fns = search_steps.step_functions(search)
  state, metrics = search_steps.search_step(search, fns, state, data(d.train), data(d.val),
                                            jnp.arange(b), jnp.arange(b) + b)
  assert np.isfinite(np.asarray(metrics)).all() and int(state["step"]) == 1
  for t in CELL_TYPES:
    a = np.asarray(state["arch"][t])
    assert a.shape == before["arch"][t].shape and a.dtype == np.float32 and np.isfinite(a).all()
    u = np.asarray(search.mixture(state["arch"], search_setup.live_masks(search, state))[t])
    np.testing.assert_allclose(u.sum(axis=1), 1.0, rtol=1e-5)
  masks = search_setup.live_masks(search, state)
  assert all(np.asarray(masks[t]).dtype == bool and np.asarray(masks[t]).any(axis=1).all()
             for t in CELL_TYPES)
  moved = not all(np.array_equal(before["arch"][t], np.asarray(state["arch"][t]))
                  for t in CELL_TYPES)
  assert moved == (name != "frozen")
  # The state (with the optimizer's own state) round-trips through a checkpoint.
  mngr = checkpointing.manager(os.path.join(str(tmp_path), "checkpoints"))
  checkpointing.save(mngr, 1, state, {})
  mngr.wait_until_finished()
  abstract = jax.eval_shape(lambda: search_setup.init_state(search, jax.random.key(0)))
  restored = checkpointing.restore_newest(mngr, lambda meta: abstract).state
  mngr.close()
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_an_optimizer_registered_at_run_time_is_chosen_and_checked_by_name(monkeypatch):
  monkeypatch.setattr(arch_optimizers, "_REGISTERED", {})
  darts = arch_optimizers.get("darts_adam")
  arch_optimizers.register("my_adam", darts.build, rules=(("b1", "unit_open"),),
                           hypergradients=("first_order",))
  assert arch_optimizers.names()[-1] == "my_adam"
  config = tiny_config(op_set=FEW_OPS)
  config.arch_optimizer.name = "my_adam"
  search = search_setup.build_search(config)
  assert search.arch_opt.step_order == arch_optimizers.ARCH_FIRST
  config.arch_optimizer.b1 = 1.5  # its own rules are checked
  with pytest.raises(search_setup.ConfigError, match="arch_optimizer.b1"):
    search_setup.validate_config(config)
  config.arch_optimizer.b1, config.arch_gradient = 0.5, "amended"
  with pytest.raises(search_setup.ConfigError, match="not available with arch_optimizer 'my_adam'"):
    search_setup.validate_config(config)
  with pytest.raises(ValueError, match="'xnas' is built in"):
    arch_optimizers.register("xnas", darts.build)
