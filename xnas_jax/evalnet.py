"""The evaluation network: a genotype's cells stacked and trained from scratch.

The network of DARTS (``quark0/darts/cnn/model.py``, ``NetworkCIFAR``) that
XNAS, Bi et al. and Wang et al. retrain their cells in:

* a 3x3-conv stem with ``stem_multiplier * C`` channels and an affine BN;
* ``num_cells`` cells; the cells at 1/3 and 2/3 of the depth are reduction
  cells (stride 2 on the edges leaving the cell inputs) and double the
  channels;
* each cell preprocesses its two inputs (ReLU-Conv1x1-BN, or a factorized
  reduce after a reduction cell), runs the genotype's two operations into each
  of its four nodes, sums them, and concatenates the nodes;
* scheduled drop-path on every operation except the identity (training only);
* an auxiliary head after the second reduction cell (training only);
* global average pooling and a linear classifier.

Unlike the supernet, every BN is affine and pooling has no BN after it.

With ``stem="imagenet"`` it is DARTS's ``NetworkImageNet`` (the mobile
setting of DARTS sec. 3.4 and XNAS sec. 4.2: 14 cells at C=48 on 224x224
images): two stems of stride-2 3x3 convolutions (``stem0``: conv to C/2,
BN, ReLU, conv to C, BN; ``stem1``: ReLU, conv, BN) take the images to 1/8
of their size, the first cell's first input is the 1/4-size ``stem0``
output (a factorized reduce), the auxiliary head is ImageNet's, and the
classifier pools globally (DARTS's 7x7 average pool of the 7x7 map).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xnas_jax import ops as ops_lib
from xnas_jax.genotype import CellsGenotype, Genotype
from xnas_jax.search_space import reduction_layers


def drop_path(x: jax.Array, drop_prob: jax.Array, key: jax.Array) -> jax.Array:
  """Zeroes whole examples with probability ``drop_prob`` and rescales the
  rest by ``1 / (1 - drop_prob)`` (DARTS's ``drop_path``; FractalNet)."""
  keep = 1.0 - drop_prob
  alive = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(alive, x / keep, 0.0).astype(x.dtype)


class EvalCell(nn.Module):
  """One cell of a genotype: the same number of ``(op, src)`` edges (two in
  DARTS) into each of its ``num_nodes`` nodes."""
  edges: tuple[tuple[str, int], ...]
  concat: tuple[int, ...]
  channels: int
  reduction: bool
  reduction_prev: bool
  num_nodes: int = 4

  @nn.compact
  def __call__(self, s0: jax.Array, s1: jax.Array, drop_prob: jax.Array,
               train: bool) -> jax.Array:
    c = self.channels
    s0 = (ops_lib.FactorizedReduce(c, affine=True, name="pre0")(s0, train) if self.reduction_prev
          else ops_lib.ReLUConvBN(c, affine=True, name="pre0")(s0, train))
    s1 = ops_lib.ReLUConvBN(c, affine=True, name="pre1")(s1, train)
    states = [s0, s1]
    per_node = len(self.edges) // self.num_nodes
    for j in range(self.num_nodes):
      node = None
      for k in range(j * per_node, (j + 1) * per_node):
        name, src = self.edges[k]
        stride = 2 if self.reduction and src < Genotype.num_inputs else 1
        op = ops_lib.make_op(name, c, stride, affine=True, pool_bn=False)
        y = op.clone(parent=self, name=f"edge{k}")(states[src], train)
        if train and not (name == "skip_connect" and stride == 1):
          y = drop_path(y, drop_prob, self.make_rng("dropout"))
        node = y if node is None else node + y
      states.append(node)
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(nn.Module):
  """DARTS's auxiliary classifier: ReLU, 5x5 average pool (stride 3), 1x1 conv
  to 128, 2x2 conv to 768, linear.  On maps smaller than 5x5 (digits) the
  pooling window and the second conv shrink to the map."""
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.relu(x)
    k = min(5, x.shape[1], x.shape[2])
    x = nn.avg_pool(x, (k, k), (3, 3), padding="VALID")
    x = nn.Conv(128, (1, 1), use_bias=False)(x)
    x = nn.relu(ops_lib.batch_norm(True, train)(x))
    k2 = min(2, x.shape[1], x.shape[2])
    x = nn.Conv(768, (k2, k2), padding="VALID", use_bias=False)(x)
    x = nn.relu(ops_lib.batch_norm(True, train)(x))
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class AuxiliaryHeadImageNet(nn.Module):
  """DARTS's ImageNet auxiliary classifier: ReLU, 5x5 average pool (stride 2,
  padding excluded), 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, ReLU (the
  release leaves out the BN after it), linear."""
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.relu(x)
    k = min(5, x.shape[1], x.shape[2])
    x = nn.avg_pool(x, (k, k), (2, 2), padding="VALID")
    x = nn.Conv(128, (1, 1), use_bias=False)(x)
    x = nn.relu(ops_lib.batch_norm(True, train)(x))
    k2 = min(2, x.shape[1], x.shape[2])
    x = nn.relu(nn.Conv(768, (k2, k2), padding="VALID", use_bias=False)(x))
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class ImageNetStem(nn.Module):
  """DARTS's ``stem0`` and ``stem1``: ``(s0, s1)`` at 1/4 and 1/8 of the image."""
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    c = self.channels
    conv = lambda f, name: nn.Conv(f, (3, 3), (2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                                   name=name)
    s0 = conv(c // 2, "stem0_conv0")(x)
    s0 = nn.relu(ops_lib.batch_norm(True, train, name="stem0_bn0")(s0))
    s0 = ops_lib.batch_norm(True, train, name="stem0_bn1")(conv(c, "stem0_conv1")(s0))
    s1 = ops_lib.batch_norm(True, train, name="stem1_bn")(conv(c, "stem1_conv")(nn.relu(s0)))
    return s0, s1


STEMS = ("cifar", "imagenet")


class EvalNetwork(nn.Module):
  """Stacked genotype cells (DARTS's ``NetworkCIFAR``, or ``NetworkImageNet``
  with ``stem="imagenet"``).

  ``__call__`` returns ``(logits, aux_logits)``; ``aux_logits`` is ``None``
  unless ``train`` and ``auxiliary``.  Needs the ``"dropout"`` RNG when
  training and the ``"noise"`` RNG when the genotype has a ``noise`` op.
  """
  genotype: Genotype | CellsGenotype
  num_classes: int
  channels: int = 36
  num_cells: int = 20
  auxiliary: bool = True
  stem_multiplier: int = 3
  stem: str = "cifar"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True,
               drop_prob: jax.Array | float = 0.0) -> tuple[jax.Array, jax.Array | None]:
    c = self.channels
    imagenet = self.stem == "imagenet"
    if imagenet:
      s0, s1 = ImageNetStem(c, name="stem")(x, train)
    else:
      x = nn.Conv(self.stem_multiplier * c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
      s0 = s1 = ops_lib.batch_norm(True, train)(x)
    reductions = reduction_layers(self.num_cells)
    aux_at = 2 * self.num_cells // 3
    reduction_prev, aux = imagenet, None  # ImageNet's s0 is twice s1's size
    drop_prob = jnp.asarray(drop_prob, jnp.float32)
    for i in range(self.num_cells):
      reduction = i in reductions
      if reduction:
        c *= 2
      edges, concat = (self.genotype.layer(i) if isinstance(self.genotype, CellsGenotype)
                       else self.genotype.layer(i, reduction))
      cell = EvalCell(tuple(edges), tuple(concat), c, reduction, reduction_prev,
                      self.genotype.num_nodes, name=f"cell{i}")
      s0, s1 = s1, cell(s0, s1, drop_prob, train)
      reduction_prev = reduction
      if i == aux_at and self.auxiliary and train:
        head = AuxiliaryHeadImageNet if imagenet else AuxiliaryHead
        aux = head(self.num_classes, name="aux_head")(s1, train)
    logits = nn.Dense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
    return logits, aux


def validate_genotype(genotype: Genotype | CellsGenotype, valid_ops: Sequence[str],
                      num_cells: int | None = None) -> None:
  """Raises ``ValueError`` (one line, naming the bad value) for a genotype
  the evaluation network (of ``num_cells`` cells, where given) cannot build."""
  num_nodes, num_inputs = genotype.num_nodes, genotype.num_inputs
  if isinstance(genotype, CellsGenotype):
    if num_cells is not None and len(genotype.cells) != num_cells:
      raise ValueError(f"the genotype has one cell per layer for {len(genotype.cells)} "
                       f"layers; num_cells is {num_cells} (use --config.num_cells="
                       f"{len(genotype.cells)})")
    layers = [(f"cell{i}", c, genotype.concat) for i, c in enumerate(genotype.cells)]
  else:
    layers = [(t, genotype.edges(t), genotype.concat(t)) for t in ("normal", "reduce")]
  for cell_type, edges, concat in layers:
    if num_nodes < 1 or not edges or len(edges) % num_nodes:
      raise ValueError(f"genotype {cell_type} cell has {len(edges)} edges; expected the same "
                       f"number for each of the {num_nodes} nodes")
    per_node = len(edges) // num_nodes
    for k, (name, src) in enumerate(edges):
      if name not in valid_ops or name == "none":
        raise ValueError(f"genotype {cell_type} cell: operation {name!r} cannot be built")
      node = k // per_node
      if not 0 <= src < num_inputs + node:
        raise ValueError(f"genotype {cell_type} cell: node {node} cannot take input {src}")
    for i in concat:
      if not 0 <= i < num_inputs + num_nodes:
        raise ValueError(f"genotype {cell_type}_concat has state {i}, which does not exist")


def parameter_count(params, exclude: Sequence[str] = ("aux_head",)) -> int:
  """Number of trainable parameters, without the auxiliary head (as DARTS reports)."""
  return sum(int(x.size) for k, sub in params.items() if k not in exclude
             for x in jax.tree.leaves(sub))
