"""TensorBoard event files for searches and retrainings.

Written with tensorboardX, which needs no TensorFlow; ``tensorboard --logdir
WORKDIR`` shows them.  One run directory per search seed
(``WORKDIR/tensorboard`` for one seed, ``WORKDIR/tensorboard/seed<s>`` for
several), one step per epoch.  Per epoch: every number of the epoch's
``metrics.jsonl`` line as a scalar (losses and accuracies, entropy, live
experts and wipeout gap per cell type, learning rates, step time), and, for a
search, the mixture weights of every edge as a histogram and as an
``edges x ops`` picture per cell type.  The JSONL stays the
machine-readable record; these files are for watching a run.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import tensorboardX

# Metrics-line keys that are not curves: bookkeeping, or per-epoch structures
# drawn otherwise (the mixture weights) or not at all (the genotype).
_NOT_SCALARS = frozenset({"epoch", "step", "seed", "compilations"})


def run_dir(workdir: str, seed: int | None = None) -> str:
  """The event directory of ``seed`` (None: a run with one seed)."""
  base = os.path.join(workdir, "tensorboard")
  return base if seed is None else os.path.join(base, f"seed{seed}")


def scalars_of(line: Mapping[str, Any],
               cell_types: Sequence[str] = ("normal", "reduce")) -> dict[str, float]:
  """The numbers of a metrics line, with TensorBoard tags grouped by kind
  (``loss/train``, ``entropy/normal``, ...; per cell type of the space)."""
  suffixes = tuple(f"_{t}" for t in cell_types)
  out = {}
  for key, value in line.items():
    if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    kind, _, rest = key.partition("_")
    if key == "learning_rate":
      out["learning_rate/weights"] = float(value)
    elif rest in ("loss", "acc"):  # train_loss -> loss/train
      out[f"{rest}/{kind}"] = float(value)
    elif suffixes and key.endswith(suffixes):  # entropy_normal -> entropy/normal
      head, _, cell = key.rpartition("_")
      out[f"{head}/{cell}"] = float(value)
    elif key.endswith("_s"):  # epoch_time_s -> time/epoch_time_s
      out[f"time/{key}"] = float(value)
    else:
      out[f"misc/{key}"] = float(value)
  return out


def mixture_image(u: np.ndarray, scale: int = 12) -> np.ndarray:
  """An ``[E, N]`` array of mixture weights in [0, 1] as an ``HWC`` uint8
  picture, one ``scale x scale`` grey square per weight (white = 1)."""
  u = np.clip(np.asarray(u, np.float64), 0.0, 1.0)
  img = np.kron(u, np.ones((scale, scale)))
  return np.repeat((img * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)


class EventWriter:
  """A run's event file; ``write`` takes one epoch's metrics line."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self._writer = tensorboardX.SummaryWriter(logdir=logdir, flush_secs=30)

  def write(self, line: Mapping[str, Any], cell_types: Sequence[str] = ()) -> None:
    step = int(line["epoch"])
    for tag, value in scalars_of(line, tuple(cell_types) or ("normal", "reduce")).items():
      self._writer.add_scalar(tag, value, step)
    for t in cell_types:
      if f"mixture_{t}" in line:
        u = np.asarray(line[f"mixture_{t}"], np.float64)
        self._writer.add_histogram(f"mixture/{t}", u, step)
        self._writer.add_image(f"mixture/{t}", mixture_image(u), step, dataformats="HWC")
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class EventWriters:
  """One ``EventWriter`` per seed of a search (or the one of a retraining);
  with ``enabled`` False, writes nothing."""

  def __init__(self, workdir: str, seeds: Sequence[int | None], enabled: bool = True):
    single = len(seeds) == 1
    self._writers = ({s: EventWriter(run_dir(workdir, None if single else s)) for s in seeds}
                     if enabled else {})

  def write(self, lines: Sequence[Mapping[str, Any]], cell_types: Sequence[str] = ()) -> None:
    for line in lines:
      if self._writers:
        self._writers[line.get("seed")].write(line, cell_types)

  def close(self) -> None:
    for w in self._writers.values():
      w.close()
