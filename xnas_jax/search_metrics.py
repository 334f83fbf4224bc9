"""What a search reports per epoch: losses and accuracies, the mixture's
entropy, live and built experts, XNAS's wipeout gaps, the genotype a stop
here would give, and the checks that flag a diverging search."""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import optax

from xnas_jax import arch as arch_lib
from xnas_jax import budget
from xnas_jax import optim
from xnas_jax import selection
from xnas_jax.search_setup import Search, live_masks

PyTree = Any


class SearchDiverged(RuntimeError):
  """A non-finite loss; the last good checkpoint is kept."""


def epoch_metrics(search: Search, state: PyTree, step_metrics: np.ndarray) -> dict[str, Any]:
  """One epoch's metrics line from its per-step ``[loss, correct, val loss, val correct]``."""
  b = search.config.batch_size
  masks = live_masks(search, state)
  u = search.mixture(state["arch"], masks)
  sums = step_metrics.sum(axis=0)
  n = len(step_metrics) * b
  out = {
      "epoch": int(state["epoch"]),
      "step": int(state["step"]),
      "train_loss": float(sums[0] / n), "train_acc": float(sums[1] / n),
      "val_loss": float(sums[2] / n), "val_acc": float(sums[3] / n),
  }
  # The rates of the epoch's last step: the weights' cosine schedule, and
  # the architecture optimizer's per cell type where it has one (XNAS's eta).
  out["learning_rate"] = search.weight_learning_rate(max(int(state["step"]) - 1, 0))
  for t, rate in search.arch_opt.learning_rates.items():
    out[f"arch_learning_rate_{t}"] = float(rate)
  for t in search.net.space.cell_types:
    out[f"mixture_{t}"] = np.round(np.asarray(u[t], np.float64), 6).tolist()  # [edges, ops]
    out[f"entropy_{t}"] = float(arch_lib.normalized_entropy(u[t]))
    out[f"active_{t}"] = int(np.asarray(masks[t]).sum())
    out[f"built_ops_{t}"] = len(search.net.built_ops(t))
    if "edges" in u:  # PC-DARTS's edge weights
      out[f"edge_weights_{t}"] = np.round(np.asarray(u["edges"][t], np.float64), 6).tolist()
  if search.costs is not None:  # the budget's expected cost (millions)
    out[f"expected_{search.costs.metric}_m"] = float(budget.expected_cost(search.costs, u))
  out.update(wipeout_gaps(search, state))
  notes: list[str] = []
  out["genotype"] = selection.magnitude(search, state, notes).to_dict()  # what a stop here gives
  if notes:
    out["selection_notes"] = notes
  return out


def wipeout_gaps(search: Search, state: PyTree) -> dict[str, float]:
  """The log-space wipeout gap ``2 eta L (T - t) zeta`` per cell type (XNAS
  Alg. 1, line 11): an expert whose log-weight trails its forecaster's leader
  by more than this is wiped at the next step.  Empty for optimizers
  without wipeout."""
  opt = search.arch_opt
  out = {}
  for path, count in optax.tree_utils.tree_get_all_with_path(state["arch_opt_state"], "count"):
    if getattr(path[-1], "tuple_name", "") != optim.WipeoutState.__name__:
      continue
    t = next((p.key for p in path if getattr(p, "key", None) in search.net.space.cell_types),
             None)
    if t is not None:
      remaining = max(opt.horizons[t] - int(count), 0)
      out[f"wipeout_gap_{t}"] = (2.0 * opt.learning_rates[t] * opt.reward_bounds[t]
                                 * remaining * opt.zeta)
  return out


# A search is flagged as diverging when an epoch's training loss exceeds its
# first epoch's, or a uniform guess's (ln K, for a search that diverged within
# its first epoch), by this factor, or when the validation accuracy is still
# within CHANCE_MARGIN x chance after the first epoch.
DIVERGENCE_FACTOR = 10.0
CHANCE_MARGIN = 1.25


def divergence_warning(summary: dict[str, Any], first: dict[str, Any],
                       num_classes: int) -> str | None:
  """One line when an epoch looks diverged (the losses can stay finite under
  gradient clipping while the supernet learns nothing), else None."""
  advice = "lower weight_optimizer.learning_rate (or the architecture rate)"
  if summary["train_loss"] > DIVERGENCE_FACTOR * first["train_loss"]:
    return (f"epoch {summary['epoch']}: train loss {summary['train_loss']:.3g} is "
            f"{summary['train_loss'] / first['train_loss']:.0f}x epoch {first['epoch']}'s "
            f"({first['train_loss']:.3g}); the search is diverging: {advice}")
  uniform = math.log(num_classes)  # the cross-entropy of a uniform guess
  if summary["train_loss"] > DIVERGENCE_FACTOR * uniform:
    return (f"epoch {summary['epoch']}: train loss {summary['train_loss']:.3g} is "
            f"{summary['train_loss'] / uniform:.0f}x a uniform guess's (ln {num_classes} = "
            f"{uniform:.3g}); the search is diverging: {advice}")
  if summary["epoch"] > first["epoch"] and summary["val_acc"] <= CHANCE_MARGIN / num_classes:
    return (f"epoch {summary['epoch']}: val accuracy {summary['val_acc']:.3f} is at chance "
            f"(1/{num_classes}); the supernet is not learning: check the data and lower "
            "weight_optimizer.learning_rate")
  return None


def first_epoch_metrics(metrics_path: str, seeds: list[int]) -> dict[int, dict[str, Any]]:
  """Per seed index, the first epoch's metrics line already written (a resume)."""
  out: dict[int, dict[str, Any]] = {}
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      for line in f:
        row = json.loads(line)
        seed = row.get("seed", seeds[0])
        if seed in seeds:
          out.setdefault(seeds.index(seed), row)
  return out


def check_finite(step_metrics: np.ndarray, first_step: int) -> None:
  """Raises ``SearchDiverged`` at the first non-finite step metric."""
  names = ("train loss", "train accuracy", "val loss", "val accuracy")
  bad = ~np.isfinite(step_metrics)
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise SearchDiverged(f"non-finite {names[j]} ({step_metrics[i, j]}) at step {first_step + i}")
