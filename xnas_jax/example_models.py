"""A small user model with choice points: what ``configs/digits_own_model.py``
searches and ``notebooks/tutorial_own_model.ipynb`` writes itself.

``ChoiceCNN``: a 3x3-conv stem, then ``num_layers`` layers, each a choice of
a 3x3 conv, a 5x5 conv, a depthwise-separable 3x3 conv or the identity, the
last one adding a skip input chosen among the earlier layers' outputs, then
global average pooling and a linear classifier.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xnas_jax.choice import Choice, InputChoice


class ConvBN(nn.Module):
  """ReLU, a ``kernel`` x ``kernel`` convolution, batch norm."""
  features: int
  kernel: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (self.kernel, self.kernel), use_bias=False)(nn.relu(x))
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


class SepConvBN(nn.Module):
  """ReLU, a depthwise ``kernel`` x ``kernel`` convolution, a pointwise one, batch norm."""
  features: int
  kernel: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    x = nn.Conv(c, (self.kernel, self.kernel), feature_group_count=c, use_bias=False)(nn.relu(x))
    x = nn.Conv(self.features, (1, 1), use_bias=False)(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


def identity(x: jax.Array, train: bool) -> jax.Array:
  del train
  return x


LAYER_CANDIDATES = ("conv3x3", "conv5x5", "sep_conv3x3", "identity")


class ChoiceCNN(nn.Module):
  """See the module docstring."""
  num_classes: int = 10
  features: int = 16
  num_layers: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    f = self.features
    x = nn.Conv(f, (3, 3), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    states = [x]
    for i in range(self.num_layers):
      x = Choice([ConvBN(f, 3), ConvBN(f, 5), SepConvBN(f, 3), identity],
                 label=f"layer{i}", names=LAYER_CANDIDATES)(x, train)
      if i == self.num_layers - 1 and len(states) > 1:
        skip_names = ("stem",) + tuple(f"layer{j}" for j in range(i))
        x = x + InputChoice(label="skip", names=skip_names)(states)
      states.append(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
