"""Small search configurations shared by the end-to-end tests."""
from xnas_jax import config_defaults
from xnas_jax import search_metrics


def tiny_config(**overrides):
  c = config_defaults.base_config()
  c.channels, c.num_cells, c.batch_size, c.epochs, c.limit = 4, 3, 16, 2, 96
  c.num_devices = 1  # tests/test_parallel.py covers 8
  c.rebuild_wiped = False  # tests/test_rebuild.py covers rebuilds
  c.figures = False  # tests/test_figures.py draws them
  # The tiny searches are compile-bound: the grouped depthwise conv compiles
  # in about half the time of the CPU's default shifted form
  # (benchmarks/compile_time.py).  The shifted form is tested in
  # tests/test_ops.py (against a NumPy loop) and, in the supernet,
  # tests/test_supernet.py and tests/test_torch_comparator.py.
  c.depthwise_impl = "grouped"
  for k, v in overrides.items():
    c[k] = v
  return c


# Zela et al.'s S2 (skip_connect, sep_conv_3x3) and S3 (none as well): for the
# tests whose subject is not the experts (hypergradients, step order,
# perturbation selection) but whose cost is their compilation, which grows
# with the experts per edge.  The full op sets are compiled by
# tests/test_supernet.py, tests/test_torch_comparator.py and the other searches.
FEW_OPS = "s2"
FEW_OPS_WITH_NONE = "s3"


def gradient_program_args(search, state, b=16):
  """The arguments of ``search_steps.loss_and_grads_fn``'s program for the
  first ``b`` training images at the state's mixture weights."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from xnas_jax import search_steps  # pylint: disable=import-outside-toplevel
  d = search.data
  x = (jnp.asarray(d.train.images[:b]) - d.mean) / d.std
  y = jnp.asarray(d.train.labels[:b])
  masks = search.net.default_masks()
  u = search_steps.per_copy_weights(search.net, search.mixture(state["arch"], masks), b)
  return (state["params"], state["batch_stats"], u, masks, x, y, jax.random.key(1))


def wiping_config(rebuild_wiped=True):
  """zeta -> 0 closes the wipeout gap: after one step a single expert per edge
  survives, so some ops are wiped on every edge and the search rebuilds."""
  c = tiny_config(rebuild_wiped=rebuild_wiped)
  c.arch_optimizer.zeta = 1e-6
  return c


def crash_then_resume(config, workdir, monkeypatch):
  """Runs a search that crashes in its second epoch, then resumes it in ``workdir``."""
  import pytest  # pylint: disable=import-outside-toplevel
  from xnas_jax import train  # pylint: disable=import-outside-toplevel
  original = search_metrics.epoch_metrics
  calls = {"n": 0}

  def crash_in_second_epoch(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 2:
      raise KeyboardInterrupt("simulated crash")
    return original(*args, **kwargs)

  monkeypatch.setattr(search_metrics, "epoch_metrics", crash_in_second_epoch)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, workdir, progress=False)
  monkeypatch.setattr(search_metrics, "epoch_metrics", original)
  return train.train_and_evaluate(config, workdir, progress=False)
