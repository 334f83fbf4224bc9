"""The DARTS cell space (Liu et al., 2019) and its variants, as a family.

A cell has two inputs (the two previous cells' outputs) and four nodes, each
fed by every earlier state (``topology="darts"``, 14 edges) or by the first
input and the previous state (``"fixed"``, 8 edges; Bi et al.); a normal and
a reduction cell type own the architecture parameters; a discrete cell keeps
two edges per node.  The op sets (``op_set``): DARTS's, XNAS's (no ``none``,
a 1x1-conv cell output), and Zela et al.'s S1-S4.  The search network is
``xnas_jax.supernet.Supernet`` (DARTS's ``model_search``), the evaluation
network ``xnas_jax.evalnet.EvalNetwork`` (``NetworkCIFAR``), the genotype
``xnas_jax.genotype.Genotype`` (DARTS's ``Genotype`` namedtuple as JSON).
"""
from __future__ import annotations

from typing import Any, Sequence

import ml_collections

from xnas_jax import budget
from xnas_jax import config_checks
from xnas_jax import evalnet
from xnas_jax import genotype as genotype_lib
from xnas_jax import search_space
from xnas_jax.search_space import SearchSpace
from xnas_jax.supernet import Supernet

NAME = "darts"
Genotype = genotype_lib.Genotype
INPUT_NAMES = ("$c_{k-2}$", "$c_{k-1}$")
NODE_NUMBERS_FROM = 0  # nodes are drawn as 0..3

discretize = genotype_lib.discretize
from_cells = genotype_lib.from_cells
image_size_error = search_space.image_size_error
edge_costs = budget.edge_costs
genotype_cost = budget.darts_genotype_cost


def validate(config: ml_collections.ConfigDict, error: type = config_checks.ConfigError) -> None:
  """``op_set`` and ``topology`` name a DARTS-family cell."""
  config_checks.check_choice(config, "op_set", sorted(search_space.OP_SETS), error)
  config_checks.check_choice(config, "topology", search_space.TOPOLOGIES, error)
  if config.op_set == "s1" and config.topology != "darts":
    raise error("op set 's1' is defined per edge of the 'darts' topology only")


def make_space(config: ml_collections.ConfigDict) -> SearchSpace:
  return search_space.get_search_space(config.op_set, config.topology)


def supernet(space: SearchSpace, config: ml_collections.ConfigDict, num_classes: int,
             **options: Any) -> Supernet:
  """DARTS's search network of ``config.num_cells`` cells of ``config.channels``."""
  return Supernet(space, num_classes, channels=config.channels, num_cells=config.num_cells,
                  **options)


def genotype_from(obj: Any) -> Genotype | None:
  """A DARTS genotype from its JSON dict (None: not this family's form)."""
  if not isinstance(obj, dict) or "normal" not in obj:
    return None
  return Genotype.from_dict(obj)


def eval_network(genotype: Genotype, num_classes: int, channels: int, num_cells: int,
                 auxiliary: bool) -> evalnet.EvalNetwork:
  evalnet.validate_genotype(genotype, search_space.ALL_OPS)
  return evalnet.EvalNetwork(genotype, num_classes, channels, num_cells, auxiliary=auxiliary)


def cells_to_draw(genotype: Genotype) -> list[tuple[str, Sequence, Sequence[int]]]:
  """The normal and the reduction cell, each as its nodes' edges and concat."""
  return [(f"{t} cell", genotype.nodes(t), genotype.concat(t)) for t in ("normal", "reduce")]
