"""Searching a user's own Flax model from Python: ``search(model, data, config)``.

The model carries ``xnas_jax.Choice`` / ``InputChoice`` points
(``xnas_jax.choice``); the search is the library's own loop on the space the
model defines (``spaces.model``), so every architecture optimizer,
hypergradient, selection method, seed and device option applies, and the
workdir holds what a CLI search writes (metrics, checkpoints that resume,
``genotype.json``, TensorBoard events, pictures).
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import flax.linen as nn
import ml_collections
import numpy as np

from xnas_jax import config_defaults
from xnas_jax import train
from xnas_jax.spaces import model as model_space

ModelGenotype = model_space.ModelGenotype


def config_for(model: nn.Module, data: Any = "digits",
               config: ml_collections.ConfigDict | None = None,
               workdir: str | None = None) -> ml_collections.ConfigDict:
  """``config`` (default ``config_defaults.model_config()``) set to search
  ``model`` on ``data``: a dataset name (``"digits"``, ``"folder:/path"``,
  ``"npz:/path"``) or ``(images, labels)`` arrays, which are written to
  ``workdir/data.npz`` for the loader to read."""
  config = config_defaults.model_config() if config is None else config.copy_and_resolve_references()
  spec, kwargs = model_space.spec_of(model)
  with config.unlocked():
    config.space = "model"
    config.model = spec
    config.model_kwargs = ml_collections.ConfigDict(kwargs)
    if isinstance(data, str):
      config.dataset = data
    else:
      images, labels = data
      if workdir is None:
        raise ValueError("arrays as data need a workdir to hold them")
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, "data.npz")
      np.savez(path, images=np.asarray(images), labels=np.asarray(labels))
      config.dataset = f"npz:{path}"
  return config


def search(model: nn.Module, data: Any = "digits",
           config: ml_collections.ConfigDict | None = None, workdir: str | None = None, *,
           progress: bool = False) -> dict[str, Any]:
  """Searches the choice points of ``model`` (``train.train_and_evaluate``).

  Args:
    model: a Flax module with choice points, called as ``model(x, train=bool)``
      and returning logits; its fields must be config values (numbers,
      strings, lists, dicts), since the workdir's config records them.
    data: a dataset name or ``(images, labels)`` (``config_for``).
    config: the search's config (default ``config_defaults.model_config()``).
    workdir: where the search writes (default: a new temporary directory);
      a second call with the same workdir and config resumes.
    progress: show the epochs' progress bar.

  Returns:
    ``train.train_and_evaluate``'s result with ``workdir``: ``genotype`` (a
    ``ModelGenotype``; ``genotype.fixed(model)`` is the model with the
    choices fixed), ``summary``, ``state``.
  """
  workdir = workdir or tempfile.mkdtemp(prefix="xnas_own_model_")
  config = config_for(model, data, config, workdir)
  return dict(train.train_and_evaluate(config, workdir, progress=progress), workdir=workdir)


def fixed(model: nn.Module, genotype: ModelGenotype | dict | str) -> nn.Module:
  """``model`` with ``genotype``'s choices fixed: a plain Flax module, called
  as ``model`` is, whose choice points run their chosen candidates only.
  ``genotype`` may be a ``ModelGenotype``, its dict, or a path to its JSON."""
  if isinstance(genotype, str):
    with open(genotype) as f:
      import json  # pylint: disable=import-outside-toplevel
      genotype = json.load(f)
  if isinstance(genotype, dict):
    genotype = ModelGenotype.from_dict(genotype)
  return genotype.fixed(model)
