"""Reading a genotype off a trained supernet, by a method chosen by name.

* ``magnitude``: per node, the two strongest incoming edges, each with its
  strongest operation other than ``none`` (DARTS sec. 2.4; XNAS sec. 2.1:
  "the strength of an edge is max_i u_i"), from XNAS eq. 1's weights over
  every expert the space has (``selection_weights``), times PC-DARTS's edge
  weight where the search normalizes edges.
* ``perturbation``: DARTS-PT (``xnas_jax.perturbation``), which keeps the
  magnitude genotype beside its own.

``select(search, state, fns)`` runs ``config.selection`` and returns a
``Selected``; the loop writes what it holds and never tests the name.
"""
from __future__ import annotations

import json
from typing import Any, Callable, NamedTuple

import ml_collections
import numpy as np

from xnas_jax import config_checks
from xnas_jax import genotype as genotype_lib
from xnas_jax import perturbation
from xnas_jax import spaces
from xnas_jax.search_setup import Search, live_masks

PyTree = Any

RULES = (("pt.tune_epochs", "nonnegative_int"), ("pt.learning_rate", "optional_positive"),
         ("pt.train_arch", "bool"))


class Selected(NamedTuple):
  """A selection's result: the genotype, what it adds to the search's
  summary, and the files it writes (name stem -> JSON text)."""
  genotype: genotype_lib.Genotype
  summary: dict[str, Any]
  files: dict[str, str]


def _selection_mixture(search: Search, state: PyTree
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
  """``selection_weights``, and PC-DARTS's edge weights ``w`` per cell type
  (None without edge normalization), from one evaluation of the mixture."""
  u = search.mixture(state["arch"], search.net.default_masks())
  types = search.net.space.cell_types
  edges = None if "edges" not in u else {t: np.asarray(u["edges"][t]) for t in types}
  return {t: np.asarray(u[t]) for t in types}, edges


def selection_weights(search: Search, state: PyTree) -> dict[str, np.ndarray]:
  """The ``u`` that magnitude selection reads edge strengths from: XNAS eq. 1,
  ``u_i = v_i / sum_{l=1..N} v_l`` over every expert the space has, wiped ones
  with the weight they had when wiped (see ``genotype.discretize_cell``)."""
  return _selection_mixture(search, state)[0]


def magnitude(search: Search, state: PyTree,
              notes: list[str] | None = None) -> genotype_lib.Genotype:
  """Magnitude selection: the strongest live expert of the two strongest edges
  per node; fallbacks and ties are appended to ``notes``."""
  masks = live_masks(search, state)
  weights, edge_weights = _selection_mixture(search, state)
  return spaces.family(search.net.space).discretize(weights, search.net.space,
                                 {t: np.asarray(m) for t, m in masks.items()}, notes,
                                 edge_weights=edge_weights)


def _by_magnitude(search: Search, state: PyTree, fns) -> Selected:
  del fns
  notes: list[str] = []
  genotype = magnitude(search, state, notes)
  return Selected(genotype, {"selection_notes": notes} if notes else {}, {})


def _by_perturbation(search: Search, state: PyTree, fns) -> Selected:
  first = _by_magnitude(search, state, fns)
  pt = search.config.pt
  genotype, log, _ = perturbation.select(search, state, tune_epochs=pt.tune_epochs,
                                         learning_rate=pt.learning_rate, schedule=pt.schedule,
                                         train_arch=pt.train_arch, fns=fns,
                                         fallback=selection_weights(search, state))
  return Selected(genotype, dict(first.summary, magnitude_genotype=first.genotype.to_dict()),
                  {"genotype_magnitude": first.genotype.to_json(),
                   "selection_log": json.dumps(log, indent=1)})


def settle_pending(search: Search, state: PyTree, fns) -> tuple[PyTree, list[dict[str, Any]]]:
  """Gives each edge the optimizer has decided but left without an op
  (``ArchOptimizer.pending_ops``) its op by perturbation
  (``perturbation.choose_op``): SGAS+PT.  Returns the state and one log entry
  per edge."""
  opt = search.arch_opt
  if opt.pending_ops is None:
    return state, []
  log = []
  for t, edges in opt.pending_ops(state["arch_opt_state"]).items():
    for e in edges:
      op, accs = perturbation.choose_op(search, state, fns, t, e)
      state = dict(state, arch_opt_state=opt.settle_op(state["arch_opt_state"], t, e, op))
      log.append({"cell": t, "edge": list(search.net.space.edges[e]), "acc_without": accs,
                  "chosen": search.net.space.ops[op]})
  return state, log


METHODS: dict[str, Callable[..., Selected]] = {"magnitude": _by_magnitude,
                                               "perturbation": _by_perturbation}


def validate(config: ml_collections.ConfigDict,
             error: type = config_checks.ConfigError) -> None:
  """Checks ``config.selection`` and ``config.pt``."""
  config_checks.check_choice(config, "selection", tuple(METHODS), error)
  config_checks.check_choice(config, "pt.schedule", perturbation.SCHEDULES, error)
  config_checks.check(config, RULES, error)


def select(search: Search, state: PyTree, fns) -> Selected:
  """``config.selection`` applied to a trained search (``fns``: its ``StepFunctions``)."""
  return METHODS[search.config.selection](search, state, fns)
