"""Published DARTS-space cells as named genotypes (data copied from the
authors' releases), usable wherever a genotype file is:
``xnas-train --genotype darts_v2``.

Sources (each entry's ``source``):

* ``darts_v1``, ``darts_v2``: Liu et al., DARTS (ICLR 2019), quark0/darts
  ``cnn/genotypes.py`` (first and second order; 3.3M parameters on
  CIFAR-10, Table 1), as also shipped in xiangning-chen/DrNAS
  ``DARTS-space/genotypes.py``;
* ``pc_darts``: Xu et al., PC-DARTS (ICLR 2020), ``PC_DARTS_cifar`` as shipped
  in xiangning-chen/DrNAS ``DARTS-space/genotypes.py`` (3.6M, Table 1);
* ``drnas``: Chen et al., DrNAS (ICLR 2021), ``DrNAS_cifar10`` in
  xiangning-chen/DrNAS ``DARTS-space/genotypes.py`` (4.1M, Table 1);
* ``darts_pt``: Wang et al., DARTS-PT (ICLR 2021), ``darts_pt_s5_1`` in
  ruocwang/darts-pt ``sota/cnn/genotypes.py`` (commented 3.05M there; the
  paper's Table 2 reports 3.0M);
* ``xnas``: Nayman et al., XNAS (NeurIPS 2019), ``XNAS`` in NivNayman/XNAS
  ``genotypes.py`` (XNAS-Small, 3.7M, Table 1).  Its evaluation network in
  that release (``model.py``) is DARTS's (concatenated nodes, reductions at
  ``20 * (1, 2) // 3``) and counts 3.79M here: the paper rounds down;
* ``pdarts``: Chen et al., P-DARTS (ICCV 2019), ``PDARTS`` in
  chenxin061/pdarts ``genotypes.py``, as also shipped in xiangning-chen/DrNAS
  (3.4M, Table 1).
"""
from __future__ import annotations

from typing import NamedTuple

from xnas_jax.genotype import Genotype

_CONCAT = (2, 3, 4, 5)


class Published(NamedTuple):
  genotype: Genotype
  # Parameters (millions, C = 36, 20 cells, without the auxiliary head) its
  # paper reports for this cell; None where the paper's number is not this cell's.
  params_m: float | None
  source: str
  # How far the count here may be from ``params_m`` (the papers round to 0.1M).
  tolerance_m: float = 0.06


def _g(normal, reduce) -> Genotype:
  return Genotype(tuple(normal), _CONCAT, tuple(reduce), _CONCAT)


GENOTYPES: dict[str, Published] = {
    "darts_v1": Published(_g(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]),
        None, "DARTS first order; quark0/darts cnn/genotypes.py DARTS_V1 (the paper's 3.3M, "
              "Table 1, is for both orders; this released cell has 3.17M)"),
    "darts_v2": Published(_g(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
        3.3, "DARTS second order; quark0/darts cnn/genotypes.py DARTS_V2"),
    "pc_darts": Published(_g(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]),
        3.6, "PC-DARTS CIFAR-10; PC_DARTS_cifar"),
    "drnas": Published(_g(
        [("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2), ("dil_conv_5x5", 3)],
        [("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("dil_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("sep_conv_5x5", 1), ("dil_conv_5x5", 3), ("skip_connect", 4), ("sep_conv_5x5", 1)]),
        4.1, "DrNAS CIFAR-10 (with progressive learning, Table 1); xiangning-chen/DrNAS "
              "DARTS-space/genotypes.py DrNAS_cifar10"),
    "darts_pt": Published(_g(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 0), ("dil_conv_3x3", 4)],
        [("dil_conv_5x5", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 2),
         ("max_pool_3x3", 1), ("dil_conv_3x3", 3), ("sep_conv_5x5", 0), ("sep_conv_3x3", 4)]),
        3.0, "DARTS-PT on DARTS's space; ruocwang/darts-pt sota/cnn/genotypes.py darts_pt_s5_1"),
    "xnas": Published(_g(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("sep_conv_3x3", 2),
         ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4), ("sep_conv_3x3", 0)],
        [("max_pool_3x3", 0), ("avg_pool_3x3", 1), ("avg_pool_3x3", 0), ("skip_connect", 2),
         ("dil_conv_3x3", 3), ("max_pool_3x3", 0), ("dil_conv_5x5", 4), ("avg_pool_3x3", 0)]),
        3.7, "XNAS CIFAR-10 (XNAS-Small, Table 1); NivNayman/XNAS genotypes.py XNAS (3.79M "
              "in DARTS's evaluation network, which that release uses: the paper rounds down)",
        tolerance_m=0.1),
    "pdarts": Published(_g(
        [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)]),
        3.4, "P-DARTS CIFAR-10 (Table 1); chenxin061/pdarts genotypes.py PDARTS"),
}


def load(spec: str):
  """A published genotype by name, a space's string form (a NAS-Bench-201
  arch string ``|op~0|+|...|``), or else the genotype JSON file ``spec`` of
  any space (raises ``OSError`` or ``ValueError``)."""
  from xnas_jax import spaces  # pylint: disable=import-outside-toplevel
  if spec in GENOTYPES:
    return GENOTYPES[spec].genotype
  if spec.strip().startswith("|"):
    return spaces.parse_genotype(spec)
  with open(spec) as f:
    return spaces.parse_genotype(f.read())


def get(name: str) -> Genotype:
  """The published genotype ``name`` (one of ``GENOTYPES``)."""
  if name not in GENOTYPES:
    raise ValueError(f"unknown genotype {name!r}; published ones: {', '.join(GENOTYPES)}")
  return GENOTYPES[name].genotype
