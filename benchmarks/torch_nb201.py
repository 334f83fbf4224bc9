"""NAS-Bench-201's DARTS search network in PyTorch, as its release builds it,
for ``search_step.py``'s speed comparison.

The structure of D-X-Y/AutoDL-Projects' ``TinyNetworkDarts``
(``cell_searchs/search_model_darts.py``, ``search_cells.py``,
``cell_operations.py``), written out here: a 3x3-conv stem with BN; three
stages of N search cells (6 mixed edges, node i summing every earlier
state, the last node as output; ops ``none``, ``skip_connect``,
``nor_conv_1x1``, ``nor_conv_3x3`` as ReLU-Conv(bias)-BN(non-affine) and
``avg_pool_3x3`` with ``count_include_pad=False``) with a ``ResNetBasicblock``
between the stages; BN, ReLU, global pooling, linear.  One search step is
darts-pt's (``nasbench201/architect_ig.py``, first order): an Adam step on the
architecture from a validation batch, then an SGD step on the weights from a
training batch with gradient clipping.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


class ReLUConvBN(nn.Sequential):
  def __init__(self, c_in, c_out, k, stride, affine):
    super().__init__(nn.ReLU(inplace=False),
                     nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, bias=not affine),
                     nn.BatchNorm2d(c_out, affine=affine))


class Zero(nn.Module):
  def forward(self, x):
    return x.mul(0.0)


class Pool(nn.Module):
  def forward(self, x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def make_op(name, c):
  return {"none": Zero, "skip_connect": nn.Identity, "avg_pool_3x3": Pool,
          "nor_conv_1x1": lambda: ReLUConvBN(c, c, 1, 1, False),
          "nor_conv_3x3": lambda: ReLUConvBN(c, c, 3, 1, False)}[name]()


class SearchCell(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.edges = nn.ModuleList(nn.ModuleList(make_op(o, c) for o in OPS)
                               for i in range(1, 4) for _ in range(i))

  def forward(self, x, weights):
    nodes, k = [x], 0
    for i in range(1, 4):
      total = 0
      for j in range(i):
        total = total + sum(op(nodes[j]) * w for op, w in zip(self.edges[k], weights[k]))
        k += 1
      nodes.append(total)
    return nodes[-1]


class ResNetBasicblock(nn.Module):
  def __init__(self, c_in, c_out):
    super().__init__()
    self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, True)
    self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, True)
    self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

  def forward(self, x):
    return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetworkDarts(nn.Module):
  def __init__(self, c, n, num_classes, c_in=3):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
    layers, c_prev = [], c
    for stage in range(3):
      width = c * 2 ** stage
      if stage:
        layers.append(ResNetBasicblock(c_prev, width))
      layers += [SearchCell(width) for _ in range(n)]
      c_prev = width
    self.cells = nn.ModuleList(layers)
    self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
    self.classifier = nn.Linear(c_prev, num_classes)
    self.arch = nn.Parameter(1e-3 * torch.randn(6, len(OPS)))

  def weights(self):
    return [p for name, p in self.named_parameters() if name != "arch"]

  def forward(self, x):
    w = F.softmax(self.arch, dim=-1)
    s = self.stem(x)
    for layer in self.cells:
      s = layer(s, w) if isinstance(layer, SearchCell) else layer(s)
    return self.classifier(self.lastact(s).mean((2, 3)))


class DartsSearch:
  """darts-pt's first-order step: Adam(3e-4, (0.5, 0.999), 1e-3) on the
  architecture, then SGD(0.025, momentum 0.9, weight decay 3e-4) with
  clipping 5 on the weights."""

  def __init__(self, net: TinyNetworkDarts, device="cpu"):
    self.net = net.to(device)
    self.arch_opt = torch.optim.Adam([net.arch], lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    self.opt = torch.optim.SGD(net.weights(), 0.025, momentum=0.9, weight_decay=3e-4)

  def step(self, x, y, xv, yv):
    self.arch_opt.zero_grad()
    F.cross_entropy(self.net(xv), yv).backward()
    self.arch_opt.step()
    self.opt.zero_grad()
    loss = F.cross_entropy(self.net(x), y)
    loss.backward()
    nn.utils.clip_grad_norm_(self.net.weights(), 5.0)
    self.opt.step()
    return loss.detach()
