"""Search-space families, chosen by name (``config.space``) from a registry.

A family is one module of this package that owns everything that differs
between search spaces, so that the search loop, the architecture optimizers
and the selection methods never ask which space they run on:

* ``RULES`` / ``validate(config, error)``: its own config keys;
* ``make_space(config, image_shape, num_classes) -> SearchSpace``: the cell's data (inputs, nodes,
  edges, experts per edge, cell types, edges kept per node);
* ``supernet(space, config, num_classes, **options)``: the search network,
  with ``init``/``apply`` over separate network and mixture-weight pytrees;
* ``image_size_error(image_shape, num_cells)``: why images are too small;
* ``discretize(weights, space, alive, notes, edge_weights)``: magnitude
  selection, and ``from_cells(space, cells)``: a genotype from the kept
  ``(op, src)`` edges of each cell type (perturbation selection);
* ``Genotype``: its genotype class (``to_dict``, ``to_json``, ``ops``) and
  ``genotype_from(obj)``: one from its JSON dict (or string form), or None
  when ``obj`` is another family's;
* ``eval_network(genotype, num_classes, channels, num_cells, auxiliary)``:
  the network a genotype is retrained in, and ``draw_genotype``.

``family(space)`` returns a space's module; ``parse_genotype`` reads any
family's genotype.  A new space is one new module here plus its configs.
"""
from __future__ import annotations

import importlib
import json
import types
from typing import Any

import ml_collections

from xnas_jax import config_checks
from xnas_jax.search_space import SearchSpace

# Built-in families: config.space -> module name in this package ("model": a
# user's own Flax model with choice points, spaces/model.py).
FAMILIES = ("darts", "nb201", "model")


def get(name: str) -> types.ModuleType:
  """The family module ``name`` (one of ``FAMILIES``)."""
  if name not in FAMILIES:
    raise ValueError(f"unknown space {name!r}; expected one of {list(FAMILIES)}")
  return importlib.import_module(f"xnas_jax.spaces.{name}")


def family(space: SearchSpace) -> types.ModuleType:
  """The module of ``space``'s family."""
  return get(space.family)


def validate(config: ml_collections.ConfigDict,
             error: type = config_checks.ConfigError) -> None:
  """Checks ``config.space`` and the chosen family's own keys."""
  config_checks.check_choice(config, "space", FAMILIES, error)
  get(config.get("space", "darts")).validate(config, error)


def make_space(config: ml_collections.ConfigDict, image_shape: tuple[int, ...] | None = None,
               num_classes: int | None = None) -> SearchSpace:
  """The search space ``config`` describes (``config.space``, default DARTS),
  for images of ``image_shape`` (a family that reads its space from a model
  needs it)."""
  return get(config.get("space", "darts")).make_space(config, image_shape, num_classes)


def parse_genotype(obj: Any) -> Any:
  """The genotype of whichever family reads ``obj`` (a JSON dict, its JSON
  text, or a family's string form such as a NAS-Bench-201 arch string).

  Raises:
    ValueError: one line naming what is wrong, when no family reads it.
  """
  if isinstance(obj, str):
    text = obj.strip()
    if text.startswith("{"):
      try:
        obj = json.loads(text)
      except json.JSONDecodeError as e:
        raise ValueError(f"not a genotype: {e}") from None
  errors = []
  for name in FAMILIES:
    try:
      g = get(name).genotype_from(obj)
    except ValueError as e:
      errors.append(str(e))
      continue
    if g is not None:
      return g
  if errors:
    raise ValueError(errors[0])
  shown = obj if isinstance(obj, str) else sorted(obj) if isinstance(obj, dict) else type(obj)
  raise ValueError(f"not a genotype of any space ({', '.join(FAMILIES)}): {shown!r}")


def family_of_genotype(genotype: Any) -> types.ModuleType:
  """The family module whose ``Genotype`` class ``genotype`` is."""
  for name in FAMILIES:
    module = get(name)
    if isinstance(genotype, getattr(module, "GENOTYPE_TYPES", module.Genotype)):
      return module
  raise ValueError(f"not a genotype of any space: {type(genotype).__name__}")


def check_genotype_for(space_name: str, genotype: Any) -> None:
  """Raises ``ValueError`` (one line) when ``genotype`` is not of the family
  ``space_name``: a genotype of one space handed to another space's network."""
  own = family_of_genotype(genotype).NAME
  if own != space_name:
    raise ValueError(f"a {own} genotype cannot be built by the {space_name} space's network "
                     f"(config.space={space_name!r}); use --config.space={own}")
