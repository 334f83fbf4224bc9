"""The PyTorch comparator of the evaluation network: DARTS's ``NetworkCIFAR``
(quark0/darts, ``cnn/model.py``) and its training step (``cnn/train.py``).

Built from a genotype with the operations of ``torch_search`` (affine BN, no
BN after the pools), it loads the variables of an ``xnas_jax.evalnet.
EvalNetwork`` of the same genotype, channels and depth, so both compute the
same function on the same weights (``tests/test_torch_comparator.py`` checks
the logits, the auxiliary logits and the gradients).

* stem: 3x3 conv to ``stem_multiplier * C`` channels, affine BN;
* cells: ``ReLUConvBN`` / ``FactorizedReduce`` preprocessing, the genotype's
  two operations into each node, drop-path on every operation but the
  identity (training), the ``concat`` nodes concatenated;
* the auxiliary head (``AuxiliaryHeadCIFAR``) after the cell at 2/3 of the
  depth, global average pooling and a linear classifier.

``TrainStep`` is one step of ``train.py``: cross-entropy plus ``aux_weight``
times the auxiliary head's, momentum SGD with weight decay, the gradient
norm clipped at 5.  Used by ``benchmarks/evalnet_step.py``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

import torch_search
from torch_search import _bn, _load_bn, _set_conv, _t
from xnas_jax.search_space import reduction_layers, get_search_space
NUM_INPUTS = get_search_space().num_inputs  # the DARTS cell's
NUM_NODES = get_search_space().num_nodes  # the DARTS cell's


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
  """DARTS's ``utils.drop_path``: zero whole examples, rescale the rest."""
  keep = 1.0 - drop_prob
  mask = torch.bernoulli(torch.full((x.shape[0], 1, 1, 1), keep, device=x.device))
  return x / keep * mask


class EvalCell(nn.Module):
  """DARTS's ``model.Cell``: a genotype's cell."""

  def __init__(self, edges, concat, c_prev_prev, c_prev, c, reduction, reduction_prev):
    super().__init__()
    self.edges, self.concat, self.reduction = list(edges), list(concat), reduction
    self.pre0 = (torch_search.FactorizedReduce(c_prev_prev, c, affine=True) if reduction_prev
                 else torch_search.ReLUConvBN(c_prev_prev, c, affine=True))
    self.pre1 = torch_search.ReLUConvBN(c_prev, c, affine=True)
    self.ops = nn.ModuleList()
    self.identity = []
    for name, src in self.edges:
      stride = 2 if reduction and src < NUM_INPUTS else 1
      self.ops.append(torch_search.make_op(name, c, stride, affine=True, pool_bn=False))
      self.identity.append(name == "skip_connect" and stride == 1)

  def forward(self, s0, s1, drop_prob: float):
    states = [self.pre0(s0), self.pre1(s1)]
    per_node = len(self.edges) // NUM_NODES
    for j in range(NUM_NODES):
      node = 0.0
      for k in range(j * per_node, (j + 1) * per_node):
        y = self.ops[k](states[self.edges[k][1]])
        if self.training and drop_prob > 0 and not self.identity[k]:
          y = drop_path(y, drop_prob)
        node = node + y
      states.append(node)
    return torch.cat([states[i] for i in self.concat], dim=1)

  def load(self, p):
    self.pre0.load(p["pre0"])
    self.pre1.load(p["pre1"])
    for k, op in enumerate(self.ops):
      op.load(p.get(f"edge{k}", {}))


class AuxiliaryHead(nn.Module):
  """DARTS's ``AuxiliaryHeadCIFAR`` (its 5x5 pool and 2x2 conv shrink to
  maps smaller than 5x5, as ``evalnet.AuxiliaryHead``'s do)."""

  def __init__(self, c, num_classes, side):
    super().__init__()
    self.k, self.k2 = min(5, side), min(2, (side - min(5, side)) // 3 + 1)
    self.conv1 = nn.Conv2d(c, 128, 1, bias=False)
    self.bn1 = _bn(128, True)
    self.conv2 = nn.Conv2d(128, 768, self.k2, bias=False)
    self.bn2 = _bn(768, True)
    self.classifier = nn.Linear(768, num_classes)

  def forward(self, x):
    x = F.avg_pool2d(F.relu(x), self.k, 3, 0, count_include_pad=False)
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.relu(self.bn2(self.conv2(x)))
    return self.classifier(x.mean(dim=(2, 3)))

  def load(self, p):
    _set_conv(self.conv1, p["Conv_0"]["kernel"])
    _load_bn(self.bn1, p["BatchNorm_0"])
    _set_conv(self.conv2, p["Conv_1"]["kernel"])
    _load_bn(self.bn2, p["BatchNorm_1"])
    self.classifier.weight.data.copy_(_t(np.asarray(p["Dense_0"]["kernel"]).T))
    self.classifier.bias.data.copy_(_t(p["Dense_0"]["bias"]))


class NetworkCIFAR(nn.Module):
  """DARTS's ``NetworkCIFAR`` of an ``evalnet.EvalNetwork`` (same genotype,
  channels, depth and auxiliary head)."""

  def __init__(self, jax_net, in_channels: int, side: int):
    super().__init__()
    g, c = jax_net.genotype, jax_net.channels
    c_stem = jax_net.stem_multiplier * c
    self.stem = nn.Conv2d(in_channels, c_stem, 3, 1, 1, bias=False)
    self.stem_bn = _bn(c_stem, True)
    self.cells = nn.ModuleList()
    reductions = reduction_layers(jax_net.num_cells)
    self.aux_at = 2 * jax_net.num_cells // 3
    c_pp, c_p, reduction_prev, self.aux_head = c_stem, c_stem, False, None
    for i in range(jax_net.num_cells):
      reduction = i in reductions
      if reduction:
        c *= 2
        side = (side + 1) // 2
      edges, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
      self.cells.append(EvalCell(edges, concat, c_pp, c_p, c, reduction, reduction_prev))
      c_pp, c_p, reduction_prev = c_p, len(concat) * c, reduction
      if i == self.aux_at and jax_net.auxiliary:
        self.aux_head = AuxiliaryHead(c_p, jax_net.num_classes, side)
    self.classifier = nn.Linear(c_p, jax_net.num_classes)
    self.drop_prob = 0.0

  def forward(self, x):
    s0 = s1 = self.stem_bn(self.stem(x))
    aux = None
    for i, cell in enumerate(self.cells):
      s0, s1 = s1, cell(s0, s1, self.drop_prob)
      if i == self.aux_at and self.aux_head is not None and self.training:
        aux = self.aux_head(s1)
    return self.classifier(s1.mean(dim=(2, 3))), aux

  def load_jax(self, variables: dict[str, Any]) -> "NetworkCIFAR":
    p = variables["params"]
    _set_conv(self.stem, p["Conv_0"]["kernel"])
    _load_bn(self.stem_bn, p["BatchNorm_0"])
    for i, cell in enumerate(self.cells):
      cell.load(p[f"cell{i}"])
    if self.aux_head is not None:
      self.aux_head.load(p["aux_head"])
    self.classifier.weight.data.copy_(_t(np.asarray(p["classifier"]["kernel"]).T))
    self.classifier.bias.data.copy_(_t(p["classifier"]["bias"]))
    return self


class TrainStep:
  """One step of DARTS's ``train.py``."""

  def __init__(self, net: NetworkCIFAR, lr=0.025, momentum=0.9, wd=3e-4, aux_weight=0.4,
               grad_clip=5.0, device="cpu"):
    self.net, self.aux_weight, self.grad_clip = net.to(device), aux_weight, grad_clip
    self.opt = torch.optim.SGD(net.parameters(), lr, momentum=momentum, weight_decay=wd)

  def step(self, x, y):
    self.opt.zero_grad()
    logits, aux = self.net(x)
    loss = F.cross_entropy(logits, y)
    if aux is not None:
      loss = loss + self.aux_weight * F.cross_entropy(aux, y)
    loss.backward()
    nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
    self.opt.step()
    return loss
