"""The PyTorch comparators compute what the JAX networks compute, on the same
weights: the search network (benchmarks/torch_search.py: logits, and the
architecture gradients; DARTS: dloss/dalpha through the softmax; XNAS:
per-example, per-replica dloss/du) and the evaluation network
(benchmarks/torch_evalnet.py: logits, auxiliary logits, weight gradients).
Skipped where torch is not installed (``pip install torch``)."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import torch_evalnet  # noqa: E402  pylint: disable=wrong-import-position
import torch_search  # noqa: E402  pylint: disable=wrong-import-position

from xnas_jax import arch as arch_lib  # noqa: E402
from xnas_jax import evalnet  # noqa: E402
from xnas_jax.genotype import Genotype  # noqa: E402
from xnas_jax.search_space import get_search_space  # noqa: E402
CELL_TYPES = get_search_space().cell_types  # the DARTS cell's
from xnas_jax.supernet import Supernet  # noqa: E402


@pytest.mark.parametrize("op_set", ["darts", "xnas"])
def test_same_logits_and_architecture_gradients(op_set):
  torch.manual_seed(0)
  space = get_search_space(op_set)
  net = Supernet(space, num_classes=5, channels=4, num_cells=3)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  y = jnp.array([0, 1, 2, 3])
  variables = net.init(jax.random.key(0), x)
  masks = net.default_masks()
  alphas = arch_lib.init_arch_params(space, jax.random.key(2), 0.5)

  def loss(alphas, u_full=None):
    u = arch_lib.mixture_weights(alphas, masks) if u_full is None else u_full
    logits, _ = net.apply(variables, x, u, masks, train=True)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)), logits

  (_, logits), g_alpha = jax.value_and_grad(loss, has_aux=True)(alphas)
  u = arch_lib.mixture_weights(alphas, masks)
  u_full = {t: jnp.broadcast_to(u[t], (net.replicas[t], 4) + u[t].shape) for t in CELL_TYPES}
  g_u = jax.grad(lambda uf: loss(None, uf)[0])(u_full)

  tnet = torch_search.Network(net, 3).load_jax(variables).train()
  tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
  ty = torch.from_numpy(np.array(y)).long()
  t_alphas = {t: torch.from_numpy(np.array(alphas[t])).requires_grad_() for t in CELL_TYPES}
  t_masks = {t: torch.from_numpy(np.asarray(masks[t])) for t in CELL_TYPES}
  t_u = {t: torch_search.masked_softmax(t_alphas[t], t_masks[t]) for t in CELL_TYPES}
  t_full = {t: v.detach().clone().requires_grad_()
            for t, v in torch_search.full_weights(tnet, t_u, 4).items()}
  t_logits = tnet(tx, torch_search.full_weights(tnet, t_u, 4))
  torch.nn.functional.cross_entropy(t_logits, ty, reduction="sum").backward()
  t_loss_u = torch.nn.functional.cross_entropy(tnet(tx, t_full), ty, reduction="sum")
  t_g_u = torch.autograd.grad(t_loss_u, list(t_full.values()))

  np.testing.assert_allclose(t_logits.detach().numpy(), logits, rtol=1e-4, atol=1e-4)
  # Float32 sums in different orders: entries near zero differ by up to ~1e-4
  # of the largest entry.
  for t, tg in zip(CELL_TYPES, t_g_u):
    scale = float(jnp.max(jnp.abs(g_alpha[t])))
    np.testing.assert_allclose(t_alphas[t].grad.numpy(), g_alpha[t], rtol=1e-3, atol=2e-4 * scale)
    scale = float(jnp.max(jnp.abs(g_u[t])))
    np.testing.assert_allclose(tg.numpy(), g_u[t], rtol=1e-3, atol=2e-4 * scale)
  assert float(jnp.max(jnp.abs(g_alpha["normal"]))) > 1e-4  # a real gradient, not zeros


def test_evaluation_network_same_logits_and_weight_gradients():
  """Every operation of the DARTS space in both cell types (a stride-2 skip is
  a factorized reduce), a factorized reduce after a reduction cell, the
  auxiliary head (after cell 2 of 3), training mode without drop-path."""
  torch.manual_seed(0)
  cell = (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 0), ("max_pool_3x3", 2),
          ("avg_pool_3x3", 1), ("sep_conv_5x5", 3), ("dil_conv_5x5", 4), ("skip_connect", 0))
  genotype = Genotype(cell, (2, 3, 4, 5), cell, (2, 3, 4, 5))
  net = evalnet.EvalNetwork(genotype, num_classes=5, channels=4, num_cells=3)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  y = jnp.array([0, 1, 2, 3])
  variables = net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, True)

  def loss(params):
    (logits, aux), _ = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                 True, 0.0, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.key(2)})
    ce = optax.softmax_cross_entropy_with_integer_labels
    return jnp.mean(ce(logits, y)) + 0.4 * jnp.mean(ce(aux, y)), (logits, aux)

  (_, (logits, aux)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      variables["params"])
  tnet = torch_evalnet.NetworkCIFAR(net, 3, 8).load_jax(variables).train()
  t_logits, t_aux = tnet(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()))
  ty = torch.from_numpy(np.array(y)).long()
  (torch.nn.functional.cross_entropy(t_logits, ty)
   + 0.4 * torch.nn.functional.cross_entropy(t_aux, ty)).backward()
  np.testing.assert_allclose(t_logits.detach().numpy(), logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(t_aux.detach().numpy(), aux, rtol=1e-4, atol=1e-4)
  p = grads
  pairs = [  # (JAX gradient, PyTorch parameter), HWIO against OIHW
      (p["Conv_0"]["kernel"], tnet.stem.weight),
      (p["cell0"]["edge0"]["DilConv_0"]["Conv_0"]["kernel"], tnet.cells[0].ops[0].first.dw.weight),
      (p["cell1"]["edge7"]["Conv_1"]["kernel"], tnet.cells[1].ops[7].conv_2.weight),
      (p["cell2"]["pre0"]["Conv_0"]["kernel"], tnet.cells[2].pre0.conv_1.weight),
      (p["cell2"]["edge5"]["DilConv_1"]["Conv_1"]["kernel"], tnet.cells[2].ops[5].second.pw.weight),
      (p["aux_head"]["Conv_1"]["kernel"], tnet.aux_head.conv2.weight),
  ]
  for g, tp in pairs:
    g = np.asarray(g).transpose(3, 2, 0, 1)
    np.testing.assert_allclose(tp.grad.numpy(), g, rtol=1e-3, atol=2e-4 * np.abs(g).max())
    assert np.abs(g).max() > 1e-6
  np.testing.assert_allclose(tnet.classifier.weight.grad.numpy(),
                             np.asarray(p["classifier"]["kernel"]).T, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(tnet.cells[0].pre1.bn.weight.grad.numpy(),
                             p["cell0"]["pre1"]["BatchNorm_0"]["scale"], rtol=1e-3, atol=1e-5)
