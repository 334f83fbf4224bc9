"""The user's own Flax model, with ``Choice`` and ``InputChoice`` points in
it (``xnas_jax.choice``), as a search-space family.

``config.model`` names the model's class as ``package.module:ClassName``
and ``config.model_kwargs`` its keyword arguments.  The model is called as
``model(x, train=bool)`` on NHWC images and returns logits ``[B, classes]``.

The space is read from the model: ``discover`` runs its ``init`` abstractly
and records every choice point it calls.  Each *label* (a forecaster: one
choice point, or several that share a label) is a cell type of one edge,
``(0, 1)``, whose experts are its candidates (``candidate0 ..``; labels with
fewer candidates than the largest have the rest unavailable), and the choice
points of a label are its replicas (``r_c`` of XNAS sec. 3.1, so that eq. 4's
horizon ``T = d E r_c`` and rate ``eta*`` count them and the examples).  Every
edge is kept (``kept_per_node = 0``): a discrete model keeps each label's
strongest candidate, or its ``num_chosen`` strongest inputs.

The search network (``ModelSupernet``) is the model itself with the mixture
weights and masks passed in a ``"choices"`` variables collection; the
genotype (``ModelGenotype``) is the chosen candidates per label with the
model's name and arguments, so that ``eval_network`` rebuilds the model with
the choices fixed (``choice.FixedModel``) for ``xnas-train``.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import json
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xnas_jax import choice as choice_lib
from xnas_jax import config_checks
from xnas_jax.search_space import SearchSpace

NAME = "model"
INPUT_NAMES = ("in",)
NODE_NUMBERS_FROM = 1
EDGE = (0, 1)


def _op(i: int) -> str:
  return f"candidate{i}"


# --- The model --------------------------------------------------------------


def load_model(spec: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
  """The model ``spec`` (``package.module:ClassName``) built with ``kwargs``;
  ``ValueError`` (one line) naming what is wrong."""
  module_name, sep, attr = str(spec).partition(":")
  if not sep or not module_name or not attr:
    raise ValueError(f"model {spec!r} is not of the form package.module:ClassName")
  try:
    obj: Any = importlib.import_module(module_name)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"model {spec!r}: cannot import {module_name!r} "
                     f"({type(e).__name__}: {_first_line(e)})") from None
  for part in attr.split("."):
    if not hasattr(obj, part):
      raise ValueError(f"model {spec!r}: {module_name!r} has no {attr!r}")
    obj = getattr(obj, part)
  if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
    raise ValueError(f"model {spec!r} is not a flax.linen.Module class")
  try:
    return obj(**dict(kwargs or {}))
  except TypeError as e:
    raise ValueError(f"model {spec!r} with model_kwargs {dict(kwargs or {})}: "
                     f"{_first_line(e)}") from None


def spec_of(model: nn.Module) -> tuple[str, dict[str, Any]]:
  """``(package.module:ClassName, keyword arguments)`` that rebuild ``model``
  (its dataclass fields); ``ValueError`` for a field a config cannot hold."""
  cls = type(model)
  kwargs = {}
  for f in dataclasses.fields(model):
    if f.name in ("parent", "name") or not f.init:
      continue
    value = getattr(model, f.name)
    try:
      json.dumps(value)
    except TypeError:
      raise ValueError(f"model {cls.__name__}: field {f.name}={value!r} is not a number, "
                       f"string, list or dict, so a config cannot hold it; make it one, "
                       f"or build the module inside the model") from None
    kwargs[f.name] = value
  return f"{cls.__module__}:{cls.__qualname__}", kwargs


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  kw = config.get("model_kwargs", None)
  if kw is None:
    return {}
  return kw.to_dict() if isinstance(kw, ml_collections.ConfigDict) else dict(kw)


def discover(model: nn.Module, image_shape: Sequence[int], num_classes: int | None = None
             ) -> tuple[choice_lib.ChoicePoint, ...]:
  """The choice points ``model`` calls on images of ``image_shape``, in
  call order; ``ValueError`` (one line) for a model that cannot be searched."""
  x = jnp.zeros((2,) + tuple(image_shape), jnp.float32)
  key = jax.random.key(0)
  name = type(model).__name__
  with choice_lib.recording() as found:
    try:
      out = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, x, train=True))
      logits = jax.eval_shape(lambda v: model.apply(v, x, train=False, rngs={"dropout": key}),
                              out)
    except choice_lib.ChoiceError as e:
      raise ValueError(str(e)) from None
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"model {name} cannot be initialized on images of shape "
                       f"{list(image_shape)} called as model(x, train=True): "
                       f"{type(e).__name__}: {_first_line(e)}") from None
  if not found:
    raise ValueError(f"model {name} has no choice point: place xnas_jax.Choice or "
                     f"xnas_jax.InputChoice modules where its architecture is open")
  if num_classes is not None and getattr(logits, "shape", None) != (2, num_classes):
    raise ValueError(f"model {name} gives outputs of shape {getattr(logits, 'shape', logits)} "
                     f"for 2 images; a searched model gives logits [batch, {num_classes}]")
  by_label: dict[str, choice_lib.ChoicePoint] = {}
  for p in found:
    first = by_label.setdefault(p.label, p)
    if (p.kind, len(p.names), p.num_chosen) != (first.kind, len(first.names), first.num_chosen):
      raise ValueError(
          f"choice point {p.path!r} shares label {p.label!r} with {first.path!r} but has "
          f"{len(p.names)} {p.kind} candidates choosing {p.num_chosen} where it has "
          f"{len(first.names)} {first.kind} candidates choosing {first.num_chosen}")
  return tuple(found)


# --- The space ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSpace(SearchSpace):
  """A ``SearchSpace`` read from a model: one cell type per label.

  Attributes (besides ``SearchSpace``'s):
    points: the model's choice points, in call order.
    model: ``package.module:ClassName``.
    model_kwargs: its keyword arguments, as JSON.
  """
  points: tuple[choice_lib.ChoicePoint, ...] = ()
  model: str = ""
  model_kwargs: str = "{}"

  def first_point(self, label: str) -> choice_lib.ChoicePoint:
    return next(p for p in self.points if p.label == label)


def space_from(points: Sequence[choice_lib.ChoicePoint], spec: str = "",
               kwargs: Mapping[str, Any] | None = None) -> ModelSpace:
  """The space of ``points`` (see the module docstring)."""
  labels = tuple(dict.fromkeys(p.label for p in points))
  sizes = {l: len(next(p for p in points if p.label == l).names) for l in labels}
  n = max(sizes.values())
  available = tuple(((tuple(i < sizes[l] for i in range(n)),)) for l in labels)
  return ModelSpace(name="model", ops=tuple(_op(i) for i in range(n)), edges=(EDGE,),
                    available=available, cell_output="last", topology="model", family=NAME,
                    cell_types=labels, num_inputs=1, num_nodes=1, kept_per_node=0,
                    points=tuple(points), model=spec,
                    model_kwargs=json.dumps(dict(kwargs or {}), sort_keys=True))


def validate(config: ml_collections.ConfigDict, error: type = config_checks.ConfigError) -> None:
  """A model that imports, and no option that assumes a cell."""
  if not config.get("model", ""):
    raise error("space 'model' needs config.model = 'package.module:ClassName' (the model "
                "with xnas_jax.Choice points in it)")
  try:
    load_model(config.model, _kwargs(config))
  except ValueError as e:
    raise error(str(e)) from None
  refused = (
      ("partial_channels", config.get("partial_channels", 1) > 1, "1"),
      ("edge_norm", bool(config.get("edge_norm", None)), "None or False"),
      ("progressive.enabled", config.get("progressive", {}).get("enabled", False), "False"),
      ("budget.metric", config.get("budget", {}).get("metric", "none") != "none", "'none'"),
      ("arch_sharing", config.get("arch_sharing", "cell_type") != "cell_type", "'cell_type'"),
  )
  for key, bad, use in refused:
    if bad:
      raise error(f"{key} is not available with space 'model' (it is defined on the cells "
                  f"the library builds, not on a user's model); use {use}")


def make_space(config: ml_collections.ConfigDict, image_shape: Sequence[int] | None = None,
               num_classes: int | None = None) -> ModelSpace:
  """The space of ``config.model`` on images of ``image_shape`` (the
  dataset's, loaded here when not given); ``ValueError`` (one line) for a
  model without choice points or with inconsistent ones."""
  if image_shape is None:
    from xnas_jax import input_pipeline  # pylint: disable=import-outside-toplevel
    data = input_pipeline.load_search_data(config.dataset, config.seed,
                                           data_dir=config.get("data_dir", "") or None,
                                           limit=config.get("limit", 0))
    image_shape, num_classes = data.image_shape, data.num_classes
  kwargs = _kwargs(config)
  points = discover(load_model(config.model, kwargs), image_shape, num_classes)
  space = space_from(points, config.model, kwargs)
  if config.get("selection", "magnitude") == "perturbation":
    many = [p for p in points if p.num_chosen > 1]
    if many:
      raise ValueError(f"input choice {many[0].path!r} keeps {many[0].num_chosen} inputs; "
                       f"perturbation selection decides one candidate per choice point; "
                       f"use selection='magnitude'")
  return space


def image_size_error(image_shape: tuple[int, ...], num_cells: int) -> str | None:
  """The model's own concern (its ``init`` is tried on the images)."""
  del image_shape, num_cells
  return None


# --- The search network -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSupernet:
  """The user's model as a search network, with the interface of
  ``supernet.Supernet``: ``init(key, x)``, ``apply(variables, x, weights,
  masks, train=, rng=)`` with ``weights[label]`` broadcastable to
  ``[replicas, B, 1, N]`` (one copy per choice point of the label and per
  example), ``replicas``, ``default_masks``, ``built_ops``.

  ``active_ops`` (a rebuild without wiped candidates) masks the candidates
  it leaves out; they cost nothing already (``nn.cond``), so the model's
  structure does not change.
  """
  space: ModelSpace
  num_classes: int
  active_ops: tuple[tuple[str, ...], ...] | None = None
  op_mask: tuple[tuple[tuple[bool, ...], ...], ...] | None = None
  partial_channels: int = 1

  @functools.cached_property
  def model(self) -> nn.Module:
    return load_model(self.space.model, json.loads(self.space.model_kwargs))

  @property
  def replicas(self) -> dict[str, int]:
    """Choice points per label: the replication ``r_c`` of XNAS sec. 3.1."""
    counts = collections.Counter(p.label for p in self.space.points)
    return {t: counts[t] for t in self.space.cell_types}

  def built_ops(self, cell_type: str) -> tuple[str, ...]:
    if self.active_ops is None:
      avail = self.space.available_mask(cell_type).any(axis=0)
      return tuple(o for o, a in zip(self.space.ops, avail) if a)
    return self.active_ops[self.space.cell_types.index(cell_type)]

  def default_masks(self) -> dict[str, jax.Array]:
    out = {}
    for i, t in enumerate(self.space.cell_types):
      m = self.space.available_mask(t) & np.isin(self.space.ops, self.built_ops(t))[None]
      if self.op_mask is not None:
        m = m & np.asarray(self.op_mask[i], bool)
      out[t] = jnp.asarray(m)
    return out

  def init(self, key: jax.Array, x: jax.Array) -> dict[str, Any]:
    """The model's ``params`` and ``batch_stats`` (every candidate's)."""
    v = self.model.init({"params": key, "dropout": key}, x, train=True)
    return {"params": dict(v["params"]), "batch_stats": dict(v.get("batch_stats", {}))}

  def choices(self, weights: Mapping[str, jax.Array], masks: Mapping[str, jax.Array],
              batch: int) -> dict[str, Any]:
    """The ``"choices"`` collection: per choice point (by module path) its
    replica's mixture weights ``u`` ``[B, n]`` and mask ``[n]``."""
    out: dict[str, Any] = {}
    seen = collections.Counter()
    n_all = self.space.num_ops
    for p in self.space.points:
      r = max(self.replicas[p.label], 1)
      u = jnp.broadcast_to(weights[p.label], (r, batch, 1, n_all))[seen[p.label], :, 0]
      seen[p.label] += 1
      n = len(p.names)
      node = out
      for part in p.path.split("/"):
        node = node.setdefault(part, {})
      node.update(u=u[:, :n], mask=jnp.asarray(masks[p.label])[0, :n])
    return out

  def apply(self, variables: Mapping[str, Any], x: jax.Array,
            weights: Mapping[str, jax.Array], masks: Mapping[str, jax.Array] | None = None, *,
            train: bool = True, rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Logits and new batch statistics, as ``supernet.Supernet.apply``."""
    masks = dict(self.default_masks() if masks is None else masks)
    stats = dict(variables.get("batch_stats", {}))
    full = {"params": variables["params"], "batch_stats": stats,
            choice_lib.COLLECTION: self.choices(weights, masks, x.shape[0])}
    rngs = {"dropout": rng} if rng is not None else None
    if train and stats:
      logits, upd = self.model.apply(full, x, train=True, mutable=["batch_stats"], rngs=rngs)
      return logits, dict(upd["batch_stats"])
    return self.model.apply(full, x, train=train, rngs=rngs), stats


def supernet(space: ModelSpace, config: ml_collections.ConfigDict, num_classes: int,
             **options: Any) -> ModelSupernet:
  """The model as its search network (``options``, the cell supernet's
  implementation choices, do not apply)."""
  del config, options
  return ModelSupernet(space, num_classes)


# --- The genotype -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelGenotype:
  """The chosen candidates of each label of a model.

  Attributes:
    model: ``package.module:ClassName``.
    model_kwargs: its keyword arguments, as JSON.
    choices: ``(label, chosen candidate indices)`` per label.
    names: ``(label, every candidate's name)`` per label.
  """
  model: str
  model_kwargs: str
  choices: tuple[tuple[str, tuple[int, ...]], ...]
  names: tuple[tuple[str, tuple[str, ...]], ...]

  def chosen_names(self) -> dict[str, list[str]]:
    names = dict(self.names)
    return {l: [names[l][i] for i in idx] for l, idx in self.choices}

  def to_dict(self) -> dict[str, Any]:
    names = dict(self.names)
    return {"model": self.model, "model_kwargs": json.loads(self.model_kwargs),
            "choices": {l: {"chosen": [names[l][i] for i in idx], "index": list(idx),
                            "candidates": list(names[l])} for l, idx in self.choices}}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  def __str__(self) -> str:
    return ", ".join(f"{l}: {'+'.join(c)}" for l, c in self.chosen_names().items())

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelGenotype":
    try:
      choices = tuple((str(l), tuple(int(i) for i in c["index"])) for l, c in d["choices"].items())
      names = tuple((str(l), tuple(str(n) for n in c["candidates"]))
                    for l, c in d["choices"].items())
      for (l, idx), (_, ns) in zip(choices, names):
        if not idx or any(not 0 <= i < len(ns) for i in idx):
          raise ValueError(f"label {l!r} chooses {list(idx)} of {len(ns)} candidates")
      return cls(str(d["model"]), json.dumps(dict(d.get("model_kwargs", {})), sort_keys=True),
                 choices, names)
    except (KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"not a model genotype: {type(e).__name__} {e}") from None

  def kept_edges(self, cell_type: str) -> dict[tuple[int, int], str]:
    return {EDGE: _op(dict(self.choices)[cell_type][0])}

  def ops(self) -> tuple[str, ...]:
    return tuple(n for ns in self.chosen_names().values() for n in ns)

  def fixed(self, model: nn.Module | None = None) -> choice_lib.FixedModel:
    """``model`` (default: the one the genotype names) with these choices
    fixed: a plain Flax module, called as the model is."""
    if model is None:
      model = load_model(self.model, json.loads(self.model_kwargs))
    return choice_lib.FixedModel(model, self.choices)


Genotype = ModelGenotype


def genotype_from(obj: Any) -> ModelGenotype | None:
  if isinstance(obj, dict) and "choices" in obj and "model" in obj:
    return ModelGenotype.from_dict(obj)
  return None


def _genotype(space: ModelSpace, chosen: Mapping[str, Sequence[int]]) -> ModelGenotype:
  labels = space.cell_types
  return ModelGenotype(space.model, space.model_kwargs,
                       tuple((l, tuple(int(i) for i in chosen[l])) for l in labels),
                       tuple((l, space.first_point(l).names) for l in labels))


def from_cells(space: ModelSpace, cells: Mapping[str, Sequence[tuple[str, int]]]
               ) -> ModelGenotype:
  """The genotype of each label's kept ``(op, src)`` edge (perturbation selection)."""
  return _genotype(space, {l: [space.ops.index(op) for op, _ in cells[l]]
                           for l in space.cell_types})


def discretize(weights: Mapping[str, np.ndarray], space: ModelSpace,
               alive: Mapping[str, np.ndarray] | None = None, notes: list[str] | None = None,
               edge_weights: Mapping[str, np.ndarray] | None = None) -> ModelGenotype:
  """Magnitude selection: each label's ``num_chosen`` strongest live
  candidates (ties to the lower index, noted)."""
  del edge_weights
  chosen = {}
  for l in space.cell_types:
    k = space.first_point(l).num_chosen
    live = space.available_mask(l)[0]
    if alive is not None:
      live = live & np.asarray(alive[l], bool)[0]
    scores = np.where(live, np.asarray(weights[l], np.float64)[0], -np.inf)
    order = np.argsort(-scores, kind="stable")[:k]
    if notes is not None and len(order) and np.sum(scores == scores[order[-1]]) > 1:
      notes.append(f"tie: choice {l!r}: several candidates share the weight of the "
                   f"last kept; kept {[int(i) for i in order]}")
    chosen[l] = sorted(int(i) for i in order)
  return _genotype(space, chosen)


# --- Retraining and pictures --------------------------------------------------


class RetrainNetwork(nn.Module):
  """The fixed model as ``xnas-train`` calls an evaluation network:
  ``(x, train, drop_prob) -> (logits, None)`` (no auxiliary head; drop-path
  is the model's own business)."""
  fixed: choice_lib.FixedModel

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True,
               drop_prob: jax.Array | float = 0.0) -> tuple[jax.Array, None]:
    del drop_prob
    return self.fixed(x, train=train), None


def eval_network(genotype: ModelGenotype, num_classes: int, channels: int, num_cells: int,
                 auxiliary: bool, network: str = "cifar") -> RetrainNetwork:
  """The genotype's model with its choices fixed (``channels``,
  ``num_cells`` and ``auxiliary`` are the model's own arguments' business)."""
  del num_classes, channels, num_cells, auxiliary
  if network != "cifar":
    raise ValueError(f"network {network!r} does not apply to a model genotype; use 'cifar'")
  return RetrainNetwork(genotype.fixed())


def cells_to_draw(genotype: ModelGenotype) -> list[tuple[str, Sequence, Sequence[int]]]:
  """One one-edge cell per label, its edge the chosen candidate(s)."""
  return [(l, ((("+".join(ns), 0),),), (1,)) for l, ns in genotype.chosen_names().items()]


def genotype_figure(genotype: ModelGenotype, title: str = "") -> Any:
  """One row per label: its candidates, the chosen ones filled in their
  colour (``figures.op_color``, by candidate index)."""
  from matplotlib import patches  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from xnas_jax import figures  # pylint: disable=import-outside-toplevel
  rows, chosen = genotype.names, dict(genotype.choices)
  width = max(len(ns) for _, ns in rows)
  fig = Figure(figsize=(1.7 * width + 1.8, 0.55 * len(rows) + 0.9))
  ax = fig.add_subplot()
  for r, (label, names) in enumerate(rows):
    y = len(rows) - 1 - r
    ax.text(-0.1, y, label, ha="right", va="center", fontsize=9)
    for i, name in enumerate(names):
      on = i in chosen[label]
      color = figures.op_color(_op(i), i)
      ax.add_patch(patches.FancyBboxPatch((i + 0.06, y - 0.3), 0.88, 0.6,
                                          boxstyle="round,pad=0.02", lw=1.2,
                                          fc=color if on else "white", ec=color))
      ax.text(i + 0.5, y, name, ha="center", va="center", fontsize=8,
              color="white" if on else "#333333", weight="bold" if on else "normal")
  ax.set_xlim(-1.4, width)
  ax.set_ylim(-0.6, len(rows) - 0.4)
  ax.axis("off")
  fig.suptitle(f"{title} {genotype.model.rpartition(':')[2]}: chosen candidates (filled)".strip(),
               fontsize=10)
  return fig
