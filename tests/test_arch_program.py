"""The weight and architecture steps' own gradient programs (each
differentiating only what its step uses)."""
import jax
import numpy as np

from xnas_jax import search_setup
from xnas_jax import search_steps
from search_configs import FEW_OPS, gradient_program_args, tiny_config


def test_each_steps_program_gives_what_the_shared_program_gives():
  # Two ops per edge (S2): the subject is what each program differentiates.
  search = search_setup.build_search(tiny_config(op_set=FEW_OPS))
  state = search_setup.init_state(search, jax.random.key(0))
  args = gradient_program_args(search, state)
  full = jax.jit(search_steps.loss_and_grads_fn(search.net))(*args)
  only_u = jax.jit(search_steps.loss_and_grads_fn(search.net, weight_grads=False))(*args)
  only_w = jax.jit(search_steps.loss_and_grads_fn(search.net, mixture_grads=False))(*args)
  assert only_u[2] is None and only_w[3] is None
  for part, kept in ((only_u, (0, 1, 3, 4)), (only_w, (0, 1, 2, 4))):
    for i in kept:  # loss, correct, g_params or g_u, new batch statistics
      for a, r in zip(jax.tree.leaves(part[i]), jax.tree.leaves(full[i])):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)


def test_the_separate_program_is_chosen_for_long_first_order_searches_only():
  c = tiny_config()
  long_search = search_setup.STEP_PROGRAMS_MIN_STEPS // c.epochs
  assert search_setup.separate_step_programs(c, long_search)
  assert not search_setup.separate_step_programs(c, long_search - 1)
  c.arch_grads_program = "separate"
  assert search_setup.separate_step_programs(c, 1)
  c.arch_gradient = "amended"  # needs the validation batch's weight gradient
  assert not search_setup.separate_step_programs(c, long_search)
  c = tiny_config(arch_grads_program="shared")
  assert not search_setup.separate_step_programs(c, long_search)
  fns = search_steps.step_functions(search_setup.build_search(c))
  assert fns.arch_grads is fns.grads and fns.weight_grads is fns.grads
  fns = search_steps.step_functions(search_setup.build_search(
      tiny_config(arch_grads_program="separate")))
  assert fns.arch_grads is not fns.grads and fns.weight_grads is not fns.grads
