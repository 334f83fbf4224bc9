"""The DARTS cell space (Liu et al., 2019) and its variants, as a family.

A cell has two inputs (the two previous cells' outputs) and four nodes, each
fed by every earlier state (``topology="darts"``, 14 edges) or by the first
input and the previous state (``"fixed"``, 8 edges; Bi et al.); a normal and
a reduction cell type own the architecture parameters; a discrete cell keeps
two edges per node.  The op sets (``op_set``): DARTS's, XNAS's (no ``none``,
a 1x1-conv cell output), and Zela et al.'s S1-S4.  With
``arch_sharing="cell"`` every cell owns its architecture (Bi et al.'s S2,
sec. 4.1.3; cell types ``cell0 .. cell{n-1}``) and the genotype lists one
cell per layer (``genotype.CellsGenotype``).  The search network is
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
GENOTYPE_TYPES = (genotype_lib.Genotype, genotype_lib.CellsGenotype)
ARCH_SHARING = ("cell_type", "cell")
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
  config_checks.check_choice(config, "arch_sharing", ARCH_SHARING, error)
  if config.get("arch_sharing", "cell_type") == "cell":
    if config.get("budget", {}).get("metric", "none") != "none":
      raise error(f"arch_sharing='cell' cannot have budget.metric={config.budget.metric!r}: "
                  f"the budget's cost model prices one normal and one reduction cell; use "
                  f"arch_sharing='cell_type' or budget.metric='none'")
    if config.get("progressive", {}).get("enabled", False):
      raise error("arch_sharing='cell' cannot have progressive.enabled=True: DrNAS's "
                  "progressive search prunes per cell type; use arch_sharing='cell_type'")


def make_space(config: ml_collections.ConfigDict, image_shape=None, num_classes=None
               ) -> SearchSpace:
  del image_shape, num_classes  # a cell space does not depend on the data
  space = search_space.get_search_space(config.op_set, config.topology)
  if config.get("arch_sharing", "cell_type") == "cell":
    return search_space.per_cell(space, config.num_cells)
  return space


def supernet(space: SearchSpace, config: ml_collections.ConfigDict, num_classes: int,
             **options: Any) -> Supernet:
  """DARTS's search network of ``config.num_cells`` cells of ``config.channels``."""
  return Supernet(space, num_classes, channels=config.channels, num_cells=config.num_cells,
                  arch_sharing=config.get("arch_sharing", "cell_type"), **options)


def genotype_from(obj: Any) -> Genotype | genotype_lib.CellsGenotype | None:
  """A DARTS genotype from its JSON dict: a normal and a reduction cell, or
  one cell per layer under ``"cells"`` (None: not this family's form)."""
  if isinstance(obj, dict) and "cells" in obj:
    return genotype_lib.CellsGenotype.from_dict(obj)
  if not isinstance(obj, dict) or "normal" not in obj:
    return None
  return Genotype.from_dict(obj)


def eval_network(genotype: Genotype | genotype_lib.CellsGenotype, num_classes: int,
                 channels: int, num_cells: int, auxiliary: bool,
                 network: str = "cifar") -> evalnet.EvalNetwork:
  """``NetworkCIFAR``, or ``NetworkImageNet`` with ``network="imagenet"``."""
  evalnet.validate_genotype(genotype, search_space.ALL_OPS, num_cells)
  return evalnet.EvalNetwork(genotype, num_classes, channels, num_cells, auxiliary=auxiliary,
                             stem=network)


def cells_to_draw(genotype: Genotype | genotype_lib.CellsGenotype
                  ) -> list[tuple[str, Sequence, Sequence[int]]]:
  """The cells to draw, each as its nodes' edges and concat: the normal and
  the reduction cell, or every layer's cell."""
  if isinstance(genotype, genotype_lib.CellsGenotype):
    return [(f"cell {i}", genotype.nodes(f"cell{i}"), genotype.concat)
            for i in range(len(genotype.cells))]
  return [(f"{t} cell", genotype.nodes(t), genotype.concat(t)) for t in ("normal", "reduce")]
