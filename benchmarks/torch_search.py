"""The PyTorch comparator: the DARTS search network and its search steps in PyTorch.

The network is DARTS's ``model_search.Network`` (quark0/darts, ``cnn/``):
stem conv 3x3 + affine BN, cells with ``ReLUConvBN`` / ``FactorizedReduce``
preprocessing, one ``MixedOp`` per edge (``sum_i w_i op_i(x)``, pools followed
by a non-affine BN), node-major concatenation of the 4 nodes (the XNAS op set
then applies its 1x1 output conv), global average pooling and a linear head.
It is built from a ``xnas_jax.supernet.Supernet`` and loads that supernet's
variables, so both compute the same function on the same weights
(``tests/test_torch_comparator.py`` checks the logits and the architecture
gradients).

Two search steps, as their papers' code runs them:

* ``darts_step``: DARTS first order (``train_search.py`` with
  ``unrolled=False``): the architecture step (Adam on the logits, betas
  (0.5, 0.999), weight decay 1e-3) on a validation batch, then the weight step
  (momentum SGD with weight decay, gradient norm clipped at 5);
* ``xnas_step``: XNAS Algorithm 1 in XNAS's order: the weight step, then the
  experts' step on a validation batch: per-example, per-cell-replica rewards
  ``R = -dloss/du`` (a ``[replicas, batch, edges, experts]`` copy of ``u``),
  each clipped at ``L``, summed, an EG step on the log-weights and the wipeout.

Used by ``benchmarks/search_step.py --vs-torch``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from xnas_jax.search_space import get_search_space
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's
NUM_INPUTS = get_search_space().num_inputs  # the DARTS cell's
NUM_NODES = get_search_space().num_nodes  # the DARTS cell's


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


def _set_conv(conv: nn.Conv2d, kernel) -> None:
  """A Flax HWIO kernel into a PyTorch OIHW conv (depthwise: [k, k, 1, C] -> [C, 1, k, k])."""
  conv.weight.data.copy_(_t(np.asarray(kernel).transpose(3, 2, 0, 1)))


def _bn(c: int, affine: bool) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(c, affine=affine, eps=1e-5, momentum=0.1)


def _load_bn(bn: nn.BatchNorm2d, p) -> None:
  """A Flax BatchNorm's scale and bias (``p``: its parameters), if affine."""
  if bn.affine:
    bn.weight.data.copy_(_t(p["scale"]))
    bn.bias.data.copy_(_t(p["bias"]))


class ReLUConvBN(nn.Module):
  def __init__(self, c_in, c_out, k=1, stride=1, affine=False):
    super().__init__()
    self.conv = nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, bias=False)
    self.bn = _bn(c_out, affine)

  def forward(self, x):
    return self.bn(self.conv(F.relu(x)))

  def load(self, p):
    _set_conv(self.conv, p["Conv_0"]["kernel"])
    _load_bn(self.bn, p.get("BatchNorm_0"))


class DilConv(nn.Module):
  def __init__(self, c_in, c_out, k, stride, dilation, affine=False):
    super().__init__()
    pad = dilation * (k - 1) // 2
    self.dw = nn.Conv2d(c_in, c_in, k, stride, pad, dilation, groups=c_in, bias=False)
    self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
    self.bn = _bn(c_out, affine)

  def forward(self, x):
    return self.bn(self.pw(self.dw(F.relu(x))))

  def load(self, p):
    _set_conv(self.dw, p["Conv_0"]["kernel"])
    _set_conv(self.pw, p["Conv_1"]["kernel"])
    _load_bn(self.bn, p.get("BatchNorm_0"))


class SepConv(nn.Module):
  def __init__(self, c, k, stride, affine=False):
    super().__init__()
    self.first = DilConv(c, c, k, stride, 1, affine)
    self.second = DilConv(c, c, k, 1, 1, affine)

  def forward(self, x):
    return self.second(self.first(x))

  def load(self, p):
    self.first.load(p["DilConv_0"])
    self.second.load(p["DilConv_1"])


class FactorizedReduce(nn.Module):
  def __init__(self, c_in, c_out, affine=False):
    super().__init__()
    self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
    self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
    self.bn = _bn(c_out, affine)

  def forward(self, x):
    x = F.relu(x)
    return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))

  def load(self, p):
    _set_conv(self.conv_1, p["Conv_0"]["kernel"])
    _set_conv(self.conv_2, p["Conv_1"]["kernel"])
    _load_bn(self.bn, p.get("BatchNorm_0"))


class Pool(nn.Module):
  """A 3x3 pool, followed by a non-affine BN in the search network (DARTS's
  ``MixedOp``) and by nothing in the evaluation network."""

  def __init__(self, kind, c, stride, bn=True):
    super().__init__()
    self.pool = (nn.MaxPool2d(3, stride, 1) if kind == "max"
                 else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
    self.bn = _bn(c, False) if bn else nn.Identity()

  def forward(self, x):
    return self.bn(self.pool(x))

  def load(self, p):
    del p


class Identity(nn.Module):
  def forward(self, x):
    return x

  def load(self, p):
    del p


def make_op(name: str, c: int, stride: int, affine: bool = False,
            pool_bn: bool = True) -> nn.Module:
  """DARTS's ``OPS[name]``: non-affine with BN after the pools in the search
  network; affine without BN after the pools in the evaluation network."""
  if name == "max_pool_3x3":
    return Pool("max", c, stride, pool_bn)
  if name == "avg_pool_3x3":
    return Pool("avg", c, stride, pool_bn)
  if name == "skip_connect":
    return Identity() if stride == 1 else FactorizedReduce(c, c, affine)
  if name.startswith("sep_conv"):
    return SepConv(c, int(name[-1]), stride, affine)
  if name.startswith("dil_conv"):
    return DilConv(c, c, int(name[-1]), stride, 2, affine)
  raise ValueError(f"no PyTorch op for {name!r}")


class Cell(nn.Module):
  """A search cell: the mixed op of every edge, nodes, output."""

  def __init__(self, jax_cell, c_prev_prev, c_prev):
    super().__init__()
    self.jax_cell = jax_cell
    c = jax_cell.channels
    self.pre0 = (FactorizedReduce(c_prev_prev, c) if jax_cell.reduction_prev
                 else ReLUConvBN(c_prev_prev, c))
    self.pre1 = ReLUConvBN(c_prev, c)
    space = jax_cell.space
    self.edges = nn.ModuleList()
    for k, (src, _) in enumerate(space.edges):
      stride = 2 if jax_cell.reduction and src < NUM_INPUTS else 1
      self.edges.append(nn.ModuleDict({
          name: make_op(name, c, stride) for name in jax_cell.built_ops if name != "none"}))
    self.out = (nn.Conv2d(NUM_NODES * c, NUM_NODES * c, 1, bias=False)
                if space.cell_output == "conv1x1" else None)

  def forward(self, s0, s1, u):
    """``u``: ``[B, edges, ops]`` mixture weights (one copy per example)."""
    space = self.jax_cell.space
    states = [self.pre0(s0), self.pre1(s1)] + [0.0] * NUM_NODES
    for k, (src, dst) in enumerate(space.edges):
      x = states[src]
      for name, op in self.edges[k].items():
        i = space.ops.index(name)
        states[dst] = states[dst] + u[:, k, i, None, None, None] * op(x)
    out = torch.cat(states[NUM_INPUTS:], dim=1)
    return out if self.out is None else self.out(out)

  def load(self, p):
    self.pre0.load(p["pre0"])
    self.pre1.load(p["pre1"])
    for g, group in enumerate(self.jax_cell.groups):
      for pos, k in enumerate(group.edge_ids):
        for name, op in self.edges[k].items():
          op.load(_index(p[f"edges{g}"].get(name, {}), pos))
    if self.out is not None:
      _set_conv(self.out, p["out"]["kernel"])


def _index(tree, pos):
  if isinstance(tree, dict):
    return {k: _index(v, pos) for k, v in tree.items()}
  return np.asarray(tree)[pos]


class Network(nn.Module):
  """The DARTS search network of a ``Supernet`` (same cells, same channels)."""

  def __init__(self, supernet, in_channels: int):
    super().__init__()
    self.supernet = supernet
    c_stem = supernet.stem_multiplier * supernet.channels
    self.stem = nn.Conv2d(in_channels, c_stem, 3, 1, 1, bias=False)
    self.stem_bn = _bn(c_stem, True)
    self.cells = nn.ModuleList()
    c_pp = c_p = c_stem
    for jc in supernet.cells:
      self.cells.append(Cell(jc, c_pp, c_p))
      c_pp, c_p = c_p, NUM_NODES * jc.channels
    self.classifier = nn.Linear(c_p, supernet.num_classes)

  def forward(self, x, u_full: dict[str, torch.Tensor]):
    """``x``: NCHW images; ``u_full[t]``: ``[replicas, B, edges, ops]``."""
    s0 = s1 = self.stem_bn(self.stem(x))
    seen = {t: 0 for t in CELL_TYPES}
    for cell in self.cells:
      t = cell.jax_cell.cell_type
      s0, s1 = s1, cell(s0, s1, u_full[t][seen[t]])
      seen[t] += 1
    return self.classifier(s1.mean(dim=(2, 3)))

  def load_jax(self, variables: dict[str, Any]) -> "Network":
    p = variables["params"]
    _set_conv(self.stem, p["stem"]["Conv_0"]["kernel"])
    self.stem_bn.weight.data.copy_(_t(p["stem"]["BatchNorm_0"]["scale"]))
    self.stem_bn.bias.data.copy_(_t(p["stem"]["BatchNorm_0"]["bias"]))
    for i, cell in enumerate(self.cells):
      cell.load(p[f"cell{i}"])
    self.classifier.weight.data.copy_(_t(np.asarray(p["head"]["Dense_0"]["kernel"]).T))
    self.classifier.bias.data.copy_(_t(p["head"]["Dense_0"]["bias"]))
    return self


def masked_softmax(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  return torch.softmax(a.masked_fill(~mask, float("-inf")), dim=-1)


def full_weights(net: Network, u: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
  """``u`` broadcast to one copy per cell replica and example."""
  reps = {t: max(sum(c.jax_cell.cell_type == t for c in net.cells), 1) for t in CELL_TYPES}
  return {t: u[t].expand(reps[t], batch, *u[t].shape) for t in CELL_TYPES}


class DartsSearch:
  """DARTS first order, as ``train_search.py`` runs it."""

  def __init__(self, net: Network, masks, lr=0.025, momentum=0.9, wd=3e-4,
               arch_lr=3e-4, arch_wd=1e-3, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    self.net, self.masks = net.to(device), {t: m.to(device) for t, m in masks.items()}
    self.alphas = {t: (1e-3 * torch.randn(m.shape, generator=g)).to(device).requires_grad_()
                   for t, m in masks.items()}
    self.w_opt = torch.optim.SGD(net.parameters(), lr, momentum=momentum, weight_decay=wd)
    self.a_opt = torch.optim.Adam(list(self.alphas.values()), arch_lr, betas=(0.5, 0.999),
                                  weight_decay=arch_wd)

  def loss(self, x, y):
    u = {t: masked_softmax(self.alphas[t], self.masks[t]) for t in CELL_TYPES}
    return F.cross_entropy(self.net(x, full_weights(self.net, u, x.shape[0])), y)

  def step(self, x, y, xv, yv):
    self.a_opt.zero_grad()
    self.loss(xv, yv).backward()
    self.a_opt.step()
    self.w_opt.zero_grad()
    loss = self.loss(x, y)
    loss.backward()
    nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
    self.w_opt.step()
    return loss


class XnasSearch:
  """XNAS Algorithm 1 with per-example, per-replica rewards clipped at ``L``."""

  def __init__(self, net: Network, masks, etas: dict[str, float], horizons: dict[str, int],
               grad_bound=1.0, lr=0.025, momentum=0.9, wd=3e-4, device="cpu"):
    self.net, self.masks = net.to(device), {t: m.clone().to(device) for t, m in masks.items()}
    self.etas, self.horizons, self.bound = etas, horizons, grad_bound
    self.log_w = {t: torch.zeros(m.shape, device=device) for t, m in masks.items()}
    self.count = {t: 0 for t in CELL_TYPES}
    self.w_opt = torch.optim.SGD(net.parameters(), lr, momentum=momentum, weight_decay=wd)

  def mixture(self):
    return {t: masked_softmax(self.log_w[t], self.masks[t]) for t in CELL_TYPES}

  def step(self, x, y, xv, yv):
    u = self.mixture()
    self.w_opt.zero_grad()
    loss = F.cross_entropy(self.net(x, full_weights(self.net, u, x.shape[0])), y)
    loss.backward()
    nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
    self.w_opt.step()
    u_full = {t: v.detach().clone().requires_grad_() for t, v in
              full_weights(self.net, u, xv.shape[0]).items()}
    vloss = F.cross_entropy(self.net(xv, u_full), yv, reduction="sum")
    grads = torch.autograd.grad(vloss, list(u_full.values()))
    with torch.no_grad():
      for t, g in zip(CELL_TYPES, grads):
        rewards = -g.clamp(-self.bound, self.bound).sum(dim=(0, 1))
        eta = self.etas[t]
        self.log_w[t] += torch.where(self.masks[t], eta * rewards, torch.zeros_like(rewards))
        self.count[t] += g.shape[0] * g.shape[1]
        gap = 2 * eta * self.bound * max(self.horizons[t] - self.count[t], 0)
        lead = self.log_w[t].masked_fill(~self.masks[t], float("-inf")).amax(-1, keepdim=True)
        self.masks[t] &= self.log_w[t] >= lead - gap
    return loss
