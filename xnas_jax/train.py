"""The search loop: ``train_and_evaluate(config, workdir)``.

It composes the pieces, each in its own module: the search and its state
(``search_setup``, the architecture optimizer from ``arch_optimizers``), the
jitted step (``search_steps``), the per-epoch metrics and divergence checks
(``search_metrics``), the genotype (``selection``), checkpoints and the
workdir's record (``checkpointing``), devices (``parallel``) and seeds
(``seeds``).  It writes ``workdir/metrics.jsonl`` (one line per epoch and
seed), orbax checkpoints under ``workdir/checkpoints`` at epoch boundaries
and ``workdir/genotype.json``; a re-run resumes bit-identically.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xnas_jax import budget
from xnas_jax import checkpointing
from xnas_jax import cli
from xnas_jax import compile_counter
from xnas_jax import config_checks
from xnas_jax import distributed
from xnas_jax import events
from xnas_jax import figures
from xnas_jax import host_memory
from xnas_jax import input_pipeline
from xnas_jax import interrupts
from xnas_jax import parallel
from xnas_jax import progressive
from xnas_jax import search_metrics
from xnas_jax import search_setup
from xnas_jax import search_steps
from xnas_jax import seeds as seeds_lib
from xnas_jax import selection
from xnas_jax import workdir_lock

PyTree = Any
ConfigError = config_checks.ConfigError
SearchDiverged = search_metrics.SearchDiverged
Interrupted = interrupts.Stopped

# Keys that may differ when a search resumes: where the data lives, how many
# devices share the batch and how depthwise convolutions are computed (float
# summation order only), and the selection run after the search.  Anything
# else (more epochs change XNAS's horizon T and its rates) is another run.
RESUMABLE_KEYS = frozenset({"data_dir", "num_devices", "depthwise_impl", "arch_grads_program",
                            "selection",
                            "tensorboard", "figures",
                            "pt.schedule", "pt.tune_epochs", "pt.learning_rate",
                            "pt.train_arch"})


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` naming the first bad value of any section."""
  search_setup.validate_config(config)
  selection.validate(config)


class _Seeds:
  """The K searches of a run (one per seed) and their stacked state's views."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.configs = seeds_lib.seed_configs(config)
    self.searches = [search_setup.build_search(c) for c in self.configs]
    self.keys = [jax.random.key(c.seed) for c in self.configs]

  @property
  def single(self) -> bool:
    return len(self.configs) == 1

  def state_of(self, state: PyTree, k: int) -> PyTree:
    return state if self.single else seeds_lib.unstack(state, k)

  def join(self, trees: list[PyTree]) -> PyTree:
    return trees[0] if self.single else seeds_lib.stack(trees)

  def fresh_state(self, searches=None) -> PyTree:
    return self.join([search_setup.init_state(s, k)
                      for s, k in zip(searches or self.searches, self.keys)])

  def with_ops(self, active_ops) -> list[search_setup.Search]:
    """The searches over a supernet building ``active_ops`` (None: as built)."""
    if active_ops is None:
      return self.searches
    return [search_setup.with_active_ops(s, active_ops) for s in self.searches]

  def with_meta(self, meta: dict[str, Any]) -> list[search_setup.Search]:
    """The searches over the supernet a checkpoint's metadata records: the
    ops it builds and its progressive stage (partial channels, pruning)."""
    return [progressive.with_structure(s, meta) for s in self.with_ops(meta.get("active_ops"))]

  def step_function(self, fns: search_steps.StepFunctions):
    step = functools.partial(search_steps.search_step, self.searches[0], fns)
    # Several seeds: the whole step is one program; the old state's buffers are reused.
    return step if self.single else jax.jit(jax.vmap(step), donate_argnums=0)

  def settle_pending(self, state: PyTree, fns: search_steps.StepFunctions
                     ) -> tuple[PyTree, list[list[dict[str, Any]]]]:
    """Each seed's pending edges given their ops (``selection.settle_pending``)."""
    state = jax.device_get(state)  # on the host: the same in every process, no reductions
    done = [selection.settle_pending(s, self.state_of(state, k), fns)
            for k, s in enumerate(self.searches)]
    return self.join([d[0] for d in done]), [d[1] for d in done]

  def batches(self, epoch: int, mesh) -> tuple[np.ndarray, np.ndarray]:
    """This epoch's index batches ``[steps, (seeds,) batch]``, split over the devices."""
    s0, b = self.searches[0], self.configs[0].batch_size
    out = []
    for split, phase in (("train", 2 * epoch), ("val", 2 * epoch + 1)):
      n = len(getattr(s0.data, split))
      idx = np.stack([input_pipeline.epoch_batches(jax.random.key(c.seed + 1), n, b, phase)
                      [:s0.steps_per_epoch] for c in self.configs], axis=1)
      out.append(parallel.shard_batches(idx[:, 0] if self.single else idx, mesh))
    return out[0], out[1]

  def data(self, split: str, mesh) -> tuple:
    parts = [(getattr(s.data, split).images, getattr(s.data, split).labels, s.data.mean,
              s.data.std) for s in self.searches]
    return parallel.replicate(self.join(parts), mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       progress: bool = True) -> dict[str, Any]:
  """Runs (or resumes) a search in ``workdir``, holding its lock
  (``workdir_lock``: a second run in the same workdir is refused); see
  ``_train_and_evaluate``."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir, workdir_lock.name_for(jax.process_index())):
    return _train_and_evaluate(config, workdir, progress=progress)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                        progress: bool = True) -> dict[str, Any]:
  """Runs (or resumes) a search in ``workdir``; returns the final summary.

  With ``config.num_seeds = K > 1`` it runs K independent searches (seeds
  ``seed .. seed + K - 1``: own data split and order, initialization and
  wipeout masks) as one jitted, ``vmap``-ped step; the state gets a leading
  seed axis, each seed writes ``genotype_seed<s>.json``, and seed ``s``'s
  result equals a single search with ``seed = s``.  Returns ``state``,
  ``genotypes`` and ``summaries`` (one per seed) and, for the first seed,
  ``genotype`` and ``summary``.
  """
  validate_config(config)
  run = _Seeds(config)
  os.makedirs(workdir, exist_ok=True)
  manager = checkpointing.manager(os.path.join(workdir, "checkpoints"))
  try:
    restored = checkpointing.resume(
        manager, workdir, config.to_dict(), RESUMABLE_KEYS,
        lambda meta: jax.eval_shape(lambda: run.fresh_state(run.with_meta(meta))))
  except checkpointing.ResumeRefused as e:
    raise ConfigError(str(e)) from None
  run.searches = run.with_meta(restored.meta)
  state = restored.state if restored.state is not None else run.fresh_state()
  mesh = parallel.data_mesh(config.get("num_devices", 0))
  state = parallel.replicate(state, mesh)
  start_epoch = int(np.max(state["epoch"]))
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  primary = distributed.is_primary()  # several processes: process 0 writes the files
  if primary:
    checkpointing.truncate_metrics(metrics_path, start_epoch)
  compile_counter.install()
  host_memory.install()
  fns = search_steps.step_functions(run.searches[0])
  step = run.step_function(fns)
  train_data, val_data = run.data("train", mesh), run.data("val", mesh)
  throttle = parallel.step_throttle(mesh)
  first_epoch = search_metrics.first_epoch_metrics(metrics_path, [c.seed for c in run.configs])
  writers = events.EventWriters(workdir, [c.seed for c in run.configs],
                                config.tensorboard and primary)
  bar = cli.progress(range(start_epoch, config.epochs), progress and primary, "search")
  # The epochs only: selection keeps the default handlers.  The processes
  # of a job act on a signal together (``interrupts.Catcher``).
  with interrupts.catch(agree=distributed.any_process if distributed.multi_process()
                        else None) as catcher:
    try:
      for epoch in bar:
        catcher.check()
        # Time and compilations of this epoch's steps and metrics; not of the
        # previous checkpoint, whose first save on several devices compiles
        # orbax's per-device copies (once).
        t0, compiled_before = time.time(), compile_counter.snapshot()
        tr, va = run.batches(epoch, mesh)
        first_step = int(np.max(state["step"]))
        step_metrics = []
        for i in range(len(tr)):
          state, m = throttle(step(state, train_data, val_data, tr[i], va[i]))
          step_metrics.append(m)
          catcher.check(step=True)  # a signal abandons the epoch; the next run repeats it
        state = dict(state, epoch=state["epoch"] + 1)
        summaries = _epoch_summaries(run, state, step_metrics, first_step, t0, compiled_before,
                                     first_epoch)
        if run.searches[0].arch_opt.pending_ops is not None:  # SGAS+PT's ops of this epoch
          state, logs = run.settle_pending(state, fns)
          state = parallel.replicate(state, mesh)
          summaries = [dict(s, op_decisions=log) if log else s
                       for s, log in zip(summaries, logs)]
        if epoch + 1 == progressive.switch_epoch(config):  # DrNAS's second stage
          new_search, state, changed = progressive.advance(
              run.searches[0], state, search_setup.live_masks(run.searches[0], state),
              lambda s: search_setup.init_state(s, jax.random.key(0)),
              jax.random.fold_in(jax.random.wrap_key_data(state["data_key"]), 1 << 20))
          run.searches = [progressive.with_structure(s, progressive.structure(new_search.net))
                          for s in run.searches]
          state = parallel.replicate(state, mesh)
          fns = search_steps.step_functions(run.searches[0])
          step = run.step_function(fns)
          summaries = [dict(s, progressive=changed) for s in summaries]
        if config.rebuild_wiped and epoch + 1 < config.epochs:
          rebuilt, state, dropped = search_setup.rebuild(run.searches[0], state)
          if any(dropped.values()):
            run.searches = run.with_ops(search_setup.built_ops(rebuilt))
            state = parallel.replicate(state, mesh)
            fns = search_steps.step_functions(run.searches[0])  # compiles at the next step
            step = run.step_function(fns)
            summaries = [dict(s, rebuilt_without=dropped) for s in summaries]
        if primary:
          checkpointing.append_metrics(metrics_path, summaries)
        writers.write(summaries, run.searches[0].net.space.cell_types)
        built = search_setup.built_ops(run.searches[0])
        checkpointing.save(manager, int(np.max(state["epoch"])), state,
                           {"active_ops": [list(o) for o in built],
                            **progressive.structure(run.searches[0].net)})
        if hasattr(bar, "set_postfix"):
          s0 = summaries[0]
          bar.set_postfix(train_acc=f"{s0['train_acc']:.3f}", val_acc=f"{s0['val_acc']:.3f}",
                          H=f"{s0[f'entropy_{run.searches[0].net.space.cell_types[0]}']:.3f}")
    except interrupts.Interrupted as e:
      manager.wait_until_finished()  # the last checkpoint is whole before the message
      raise Interrupted(e.signum, checkpointing.latest_epoch(manager)) from None
    finally:
      writers.close()
      manager.wait_until_finished()
      manager.close()
  return _select(run, state, fns, workdir, summaries if start_epoch < config.epochs else None)


def _epoch_summaries(run: _Seeds, state: PyTree, step_metrics: list[jax.Array], first_step: int,
                     t0: float, compiled_before: tuple[int, float],
                     first_epoch: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
  """Per seed, the epoch's metrics line (with timing and any divergence
  warning); raises ``SearchDiverged`` on a non-finite step metric."""
  steps = len(step_metrics)
  metrics = np.asarray(jnp.stack(step_metrics)).reshape(steps, len(run.configs), -1)
  for k in range(len(run.configs)):
    search_metrics.check_finite(metrics[:, k], first_step)
  summaries = [dict(search_metrics.epoch_metrics(s, run.state_of(state, k), metrics[:, k]),
                    seed=run.configs[k].seed) for k, s in enumerate(run.searches)]
  now = compile_counter.snapshot()  # after the metrics, whose programs compile once
  timing = {"epoch_time_s": round(time.time() - t0, 3),
            "compilations": now[0] - compiled_before[0],  # during this epoch
            "compile_s": round(now[1] - compiled_before[1], 3)}
  timing["step_time_s"] = round((timing["epoch_time_s"] - timing["compile_s"]) / steps, 4)
  summaries = [dict(summary, **timing) for summary in summaries]
  num_classes = run.searches[0].data.num_classes
  for k, summary in enumerate(summaries):
    first_epoch.setdefault(k, summary)
    warning = search_metrics.divergence_warning(summary, first_epoch[k], num_classes)
    if warning:
      summary["warning"] = warning
      print(f"warning: seed {run.configs[k].seed}: {warning}", file=sys.stderr)
  return summaries


def _select(run: _Seeds, state: PyTree, fns: search_steps.StepFunctions, workdir: str,
            summaries: list[dict[str, Any]] | None) -> dict[str, Any]:
  """Each seed's genotype by ``config.selection``, written to the workdir."""
  summaries = summaries or [{} for _ in run.configs]
  genotypes = []
  primary = distributed.is_primary()
  if distributed.multi_process():  # each process selects alone, on its own devices, the same
    state = jax.device_get(state)
  for k, s in enumerate(run.searches):
    one = run.state_of(state, k)
    suffix = "" if run.single else f"_seed{run.configs[k].seed}"
    chosen = selection.select(s, one, fns)
    for stem, text in chosen.files.items():
      _write(workdir, f"{stem}{suffix}.json", text, primary)
    genotypes.append(chosen.genotype)
    _write(workdir, f"genotype{suffix}.json", chosen.genotype.to_json(), primary)
    if s.config.figures and primary:
      seed = run.configs[k].seed
      figures.draw_genotype(chosen.genotype, [os.path.join(workdir, f"genotype{suffix}{ext}")
                                              for ext in (".png", ".svg")], f"seed {seed}:")
      figures.report_from_workdir(workdir, s.net.space, seed, suffix, chosen.genotype)
    if s.costs is not None:  # the found cells' evaluation network against the budget
      b, d = s.config.budget, s.data
      summaries[k].update({f"genotype_{m}_m": round(budget.genotype_cost(
          chosen.genotype, m, d.image_shape, d.num_classes, b.channels, b.num_cells), 4)
                           for m in ("flops", "params")}, budget_target_m=b.target)
    summaries[k] = dict(summaries[k], supernet_test_acc=supernet_test_accuracy(s, fns, one),
                        genotype=chosen.genotype.to_dict(),
                        arch_learning_rates=s.arch_opt.learning_rates,
                        selection=s.config.selection, **chosen.summary)
  return {"state": state, "genotype": genotypes[0], "summary": summaries[0],
          "genotypes": genotypes, "summaries": summaries}


def _write(workdir: str, name: str, text: str, primary: bool = True) -> None:
  if not primary:
    return
  with open(os.path.join(workdir, name), "w") as f:
    f.write(text)


def supernet_test_accuracy(search: search_setup.Search, fns: search_steps.StepFunctions,
                           state: PyTree) -> float:
  """Accuracy of the (masked) supernet on the held-out test split."""
  d = search.data
  correct = 0
  masks = search_setup.live_masks(search, state)
  for x, y in input_pipeline.iterate(d.test, 256):
    x = input_pipeline.standardize(jnp.asarray(x), d.mean, d.std)
    _, c = fns.evaluate(state["params"], state["batch_stats"], state["arch"], masks, x,
                        jnp.asarray(y))
    correct += int(c)
  return correct / max(len(d.test), 1)
