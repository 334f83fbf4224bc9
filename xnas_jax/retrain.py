"""Retraining a genotype from scratch in the evaluation network.

The DARTS evaluation protocol, which XNAS (sec. 4, 9), Bi et al. and Wang et
al. follow: the whole search training set (both halves) trains the stacked
network of ``evalnet.EvalNetwork``; the loss is the label-smoothed
cross-entropy plus ``aux_weight`` times that of the auxiliary head; SGD with
Nesterov momentum on a cosine schedule, weight decay and gradient clipping;
pad-and-crop, flip and cutout augmentation; drop-path probability rising
linearly over the epochs (``drop_path_prob * epoch / epochs``).  Reports the
test accuracy and the parameter count.

The state is a plain pytree checkpointed with orbax at every epoch boundary
(with the genotype as metadata); a re-run in the same workdir resumes
bit-identically, and refuses a checkpoint of another genotype.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xnas_jax import checkpointing
from xnas_jax import cli
from xnas_jax import config_checks
from xnas_jax import distributed
from xnas_jax import evalnet
from xnas_jax import events
from xnas_jax import figures
from xnas_jax import host_memory
from xnas_jax import input_pipeline
from xnas_jax import interrupts
from xnas_jax import optim
from xnas_jax import parallel
from xnas_jax import spaces
from xnas_jax import workdir_lock

Genotype = Any  # a genotype of any space family (xnas_jax.spaces)

PyTree = Any


ConfigError = config_checks.ConfigError


class TrainingDiverged(RuntimeError):
  """A non-finite loss; the last good checkpoint is kept."""


# The range of every numeric and boolean key of a retraining config
# (config_defaults.eval_config).
_RULES = (
    ("limit", "nonnegative_int"), ("data_seed", "nonnegative_int"), ("seed", "nonnegative_int"),
    ("channels", "positive_int"), ("num_cells", "positive_int"), ("batch_size", "positive_int"),
    ("num_devices", "nonnegative_int"), ("epochs", "positive_int"),
    ("learning_rate", "positive"), ("min_learning_rate", "nonnegative"),
    ("momentum", "unit_open"), ("nesterov", "bool"), ("weight_decay", "nonnegative"),
    ("grad_clip", "positive"), ("aux_weight", "nonnegative"), ("drop_path_prob", "unit_open"),
    ("label_smoothing", "unit_open"), ("augment.pad", "nonnegative_int"),
    ("augment.flip", "bool"), ("augment.cutout", "nonnegative_int"),
    ("tensorboard", "bool"), ("figures", "bool"), ("lr_decay", "unit_open"),
)
LR_SCHEDULES = ("cosine", "exponential")


# Keys that may differ when a retraining resumes (see train.RESUMABLE_KEYS).
RESUMABLE_KEYS = frozenset({"data_dir", "num_devices", "tensorboard", "figures"})


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` naming the first bad value."""
  if input_pipeline.dataset_error(config.dataset):
    raise ConfigError(input_pipeline.dataset_error(config.dataset))
  config_checks.check(config, _RULES, ConfigError)
  config_checks.check_choice(config, "lr_schedule", LR_SCHEDULES, ConfigError)
  config_checks.check_choice(config, "network", evalnet.STEMS, ConfigError)
  if config.get("space", "") and config.space not in spaces.FAMILIES:
    raise ConfigError(f"unknown space {config.space!r}; expected one of "
                      f"{list(spaces.FAMILIES)} (or '' for the genotype's own)")
  device_error = parallel.device_config_error(config.num_devices, config.batch_size)
  if device_error:
    raise ConfigError(device_error)


@dataclasses.dataclass(frozen=True)
class Retraining:
  """Everything static about a retraining run."""
  config: ml_collections.ConfigDict
  genotype: Genotype
  net: Any  # the genotype's evaluation network (a Flax module; evalnet.EvalNetwork in DARTS)
  train: input_pipeline.Split  # both halves of the search split
  test: input_pipeline.Split
  mean: np.ndarray
  std: np.ndarray
  tx: optax.GradientTransformation
  steps_per_epoch: int
  schedule: optax.Schedule  # the learning rate of each step


def build(config: ml_collections.ConfigDict, genotype: Genotype) -> Retraining:
  """Validates config and genotype, loads the data, builds network and optimizer."""
  validate_config(config)
  family = spaces.family_of_genotype(genotype)
  if config.get("space", ""):
    try:
      spaces.check_genotype_for(config.space, genotype)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  try:
    family.eval_network(genotype, 1, config.channels, config.num_cells, False,
                        network=config.get("network", "cifar"))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  data = input_pipeline.load_search_data(config.dataset, config.data_seed,
                                         data_dir=config.data_dir or None, limit=config.limit)
  size_error = family.image_size_error(data.image_shape, config.num_cells)
  if size_error:
    raise ConfigError(f"{config.dataset}: {size_error}")
  train = input_pipeline.Split(np.concatenate([data.train.images, data.val.images]),
                               np.concatenate([data.train.labels, data.val.labels]))
  if config.batch_size > len(train):
    raise ConfigError(f"batch_size {config.batch_size} is larger than the data "
                      f"({len(train)} training examples)")
  net = family.eval_network(genotype, data.num_classes, config.channels, config.num_cells,
                            auxiliary=config.aux_weight > 0,
                            network=config.get("network", "cifar"))
  steps = len(train) // config.batch_size
  schedule = learning_rate_schedule(config, steps)
  tx = optim.darts_sgd(schedule, config.momentum, config.weight_decay, config.grad_clip,
                       nesterov=config.nesterov)
  return Retraining(config, genotype, net, train, data.test, data.mean, data.std, tx, steps,
                    schedule)


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int
                           ) -> optax.Schedule:
  """``lr_schedule``: "cosine" to ``min_learning_rate`` over the run (DARTS's
  CIFAR protocol), or "exponential": times ``lr_decay`` after every epoch
  (DARTS's ImageNet protocol, ``StepLR(1, gamma=0.97)``)."""
  if config.get("lr_schedule", "cosine") == "exponential":
    return optax.exponential_decay(config.learning_rate, steps_per_epoch, config.lr_decay,
                                   staircase=True)
  return optax.cosine_decay_schedule(config.learning_rate, steps_per_epoch * config.epochs,
                                     alpha=config.min_learning_rate / config.learning_rate)


def init_state(run: Retraining, key: jax.Array) -> PyTree:
  k_net, k_data = jax.random.split(key)
  x = jnp.zeros((2,) + run.train.images.shape[1:], jnp.float32)
  variables = jax.jit(lambda k: run.net.init({"params": k, "dropout": k, "noise": k}, x, True))(
      k_net)
  return {
      "step": jnp.zeros([], jnp.int32),
      "epoch": jnp.zeros([], jnp.int32),
      "params": variables["params"],
      "batch_stats": variables.get("batch_stats", {}),
      "opt_state": run.tx.init(variables["params"]),
      "data_key": jax.random.key_data(k_data),
  }


def loss_fn(run: Retraining, params, batch_stats, x, y, drop_prob, key):
  """Label-smoothed cross-entropy + ``aux_weight`` x that of the auxiliary head."""
  cfg = run.config
  k_drop, k_noise = jax.random.split(key)
  (logits, aux), upd = run.net.apply(
      {"params": params, "batch_stats": batch_stats}, x, True, drop_prob,
      mutable=["batch_stats"], rngs={"dropout": k_drop, "noise": k_noise})
  targets = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), cfg.label_smoothing)
  loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
  if aux is not None:
    loss = loss + cfg.aux_weight * jnp.mean(optax.softmax_cross_entropy(aux, targets))
  correct = jnp.sum(jnp.argmax(logits, -1) == y)
  return loss, (upd.get("batch_stats", {}), correct)


def make_functions(run: Retraining) -> dict[str, Callable]:
  cfg = run.config

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, images, labels, idx):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["data_key"]), state["step"])
    k_aug, k_loss = jax.random.split(key)
    x = input_pipeline.augment(k_aug, images[idx], pad=cfg.augment.pad, flip=cfg.augment.flip,
                               cutout=cfg.augment.cutout)
    x = input_pipeline.standardize(x, run.mean, run.std)
    drop_prob = cfg.drop_path_prob * state["epoch"].astype(jnp.float32) / cfg.epochs
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, run), has_aux=True)
    (loss, (stats, correct)), grads = grad_fn(state["params"], state["batch_stats"], x,
                                              labels[idx], drop_prob, k_loss)
    updates, opt_state = run.tx.update(grads, state["opt_state"], state["params"])
    new = dict(state, step=state["step"] + 1, params=optax.apply_updates(state["params"], updates),
               batch_stats=stats, opt_state=opt_state)
    return new, jnp.stack([loss, correct.astype(jnp.float32)])

  @jax.jit
  def evaluate(params, batch_stats, x, y):
    logits, _ = run.net.apply({"params": params, "batch_stats": batch_stats},
                              input_pipeline.standardize(x, run.mean, run.std), False,
                              rngs={"noise": jax.random.key(0)})
    return jnp.sum(jnp.argmax(logits, -1) == y)

  return {"train_step": train_step, "evaluate": evaluate}


def test_accuracy(run: Retraining, fns: dict[str, Callable], state: PyTree,
                  batch_size: int = 256) -> float:
  correct = 0
  for x, y in input_pipeline.iterate(run.test, batch_size):
    correct += int(fns["evaluate"](state["params"], state["batch_stats"], jnp.asarray(x),
                                   jnp.asarray(y)))
  return correct / max(len(run.test), 1)


def train_and_evaluate(config: ml_collections.ConfigDict, genotype: Genotype, workdir: str, *,
                       progress: bool = True) -> dict[str, Any]:
  """Retrains ``genotype`` in ``workdir`` holding its lock (``workdir_lock``);
  see ``_train_and_evaluate``."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir, workdir_lock.name_for(jax.process_index())):
    return _train_and_evaluate(config, genotype, workdir, progress=progress)


def _train_and_evaluate(config: ml_collections.ConfigDict, genotype: Genotype, workdir: str, *,
                        progress: bool = True) -> dict[str, Any]:
  """Retrains ``genotype`` (or resumes in ``workdir``); returns the summary.

  Writes ``workdir/metrics.jsonl`` (one line per epoch), orbax checkpoints
  under ``workdir/checkpoints`` and ``workdir/summary.json``.
  """
  run = build(config, genotype)
  os.makedirs(workdir, exist_ok=True)
  manager = checkpointing.manager(os.path.join(workdir, "checkpoints"))
  key = jax.random.key(config.seed)
  # The genotype first, for its own message; check_config then compares the
  # rest of the run (the genotype included).
  other_genotype = f"{workdir} holds a checkpoint of another genotype; use a new --workdir"
  if (manager.all_steps() and checkpointing.recorded_config(workdir).get(
      "genotype", genotype.to_dict()) != genotype.to_dict()):
    manager.close()
    raise ConfigError(other_genotype)
  try:
    restored = checkpointing.resume(
        manager, workdir, dict(config.to_dict(), genotype=genotype.to_dict()), RESUMABLE_KEYS,
        lambda meta: jax.eval_shape(lambda: init_state(run, key)))
  except checkpointing.ResumeRefused as e:
    raise ConfigError(str(e)) from None
  if restored.step is not None and restored.meta.get("genotype") != genotype.to_dict():
    manager.close()  # a workdir from before config.json: the checkpoint's own record
    raise ConfigError(other_genotype)
  state = restored.state if restored.state is not None else init_state(run, key)
  mesh = parallel.data_mesh(config.num_devices)
  state = parallel.replicate(state, mesh)
  images, labels = parallel.replicate((run.train.images, run.train.labels), mesh)
  throttle = parallel.step_throttle(mesh)
  host_memory.install()
  fns = make_functions(run)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  start = int(state["epoch"])
  primary = distributed.is_primary()  # several processes: process 0 writes the files
  if primary:
    checkpointing.truncate_metrics(metrics_path, start)
  order_key = jax.random.key(config.seed + 1)
  steps, b = run.steps_per_epoch, config.batch_size
  params_m = evalnet.parameter_count(state["params"]) / 1e6
  summary: dict[str, Any] = {}
  writers = events.EventWriters(workdir, [None], config.tensorboard and primary)
  if config.figures and primary:
    figures.draw_genotype(genotype, [os.path.join(workdir, "genotype.png")], "retrained:")
  epochs = cli.progress(range(start, config.epochs), progress and primary, "retrain")
  # A signal abandons the epoch; the next run repeats it.  The processes of
  # a job act on it together (``interrupts.Catcher``).
  with interrupts.catch(agree=distributed.any_process if distributed.multi_process()
                        else None) as catcher:
    try:
      for epoch in epochs:
        catcher.check()
        t0 = time.time()
        idx = parallel.shard_batches(
            input_pipeline.epoch_batches(order_key, len(run.train), b, epoch)[:steps], mesh)
        out = []
        for i in range(steps):
          state, m = throttle(fns["train_step"](state, images, labels, idx[i]))
          out.append(m)
          catcher.check(step=True)
        out = np.asarray(jnp.stack(out))
        if not np.isfinite(out).all():
          raise TrainingDiverged(f"non-finite training loss in epoch {epoch + 1}; the last good "
                                 f"checkpoint is in {os.path.join(workdir, 'checkpoints')}")
        state = dict(state, epoch=state["epoch"] + 1)
        summary = {"epoch": epoch + 1, "train_loss": float(out[:, 0].mean()),
                   "train_acc": float(out[:, 1].sum() / (steps * b)),
                   "learning_rate": float(run.schedule(int(state["step"]) - 1)),
                   "epoch_time_s": round(time.time() - t0, 3)}
        if primary:
          checkpointing.append_metrics(metrics_path, [summary])
        writers.write([summary])
        checkpointing.save(manager, epoch + 1, state, {"genotype": genotype.to_dict()})
    except interrupts.Interrupted as e:
      manager.wait_until_finished()  # the last checkpoint is whole before the message
      writers.close()
      raise interrupts.Stopped(e.signum, checkpointing.latest_epoch(manager)) from None
    finally:
      manager.wait_until_finished()
      manager.close()
  if distributed.multi_process():  # each process evaluates alone, on its own devices
    state = jax.device_get(state)
  summary = dict(summary, test_acc=test_accuracy(run, fns, state), params_m=params_m,
                 genotype=genotype.to_dict(), seed=config.seed)
  writers.write([{"epoch": summary.get("epoch", start), "test_acc": summary["test_acc"]}])
  writers.close()
  if primary:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return {"state": state, "summary": summary}
