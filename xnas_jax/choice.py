"""Choice points in a user's own Flax model: ``Choice`` and ``InputChoice``.

A user marks where the architecture is open, as NNI's ``LayerChoice`` and
``InputChoice`` do in PyTorch::

    class Net(nn.Module):
      @nn.compact
      def __call__(self, x, train):
        x = Choice([ConvBN(16, 3), ConvBN(16, 5), Identity()], label="layer1")(x, train)
        y = ConvBN(16, 3)(x, train)
        return InputChoice(label="skip")([x, y])

A choice point is a *forecaster* in XNAS's language (sec. 2.1): its output is
the mixture ``sum_i u_i f_i(x)`` of its candidates' outputs (the experts,
eq. 1), and the mixture weights ``u`` come from the search's architecture
state, never from Flax ``params``.  Choice points that share a ``label``
share one forecaster (one row of architecture parameters), as
``LayerChoice(label=...)`` does; each of them is a *replica* of it, with its
own per-example copy of ``u`` (so that ``-dloss/du_i`` is the reward of each
replica and example, XNAS Alg. 1 line 8).

A choice point reads what it does from where it runs:

* **search** (the variables hold a ``"choices"`` collection, which
  ``spaces.model.ModelSupernet`` builds from the architecture state): the
  mixture of the live candidates, each under ``nn.cond`` on its mask bit, so
  that a wiped or unsampled candidate is not computed, forward or backward;
* **fixed** (inside ``FixedModel``): the chosen candidate (or the sum of the
  chosen inputs) alone; the others are never called and get no parameters;
* **init** (no ``"choices"``): every candidate, averaged, so that ``init``
  creates every candidate's parameters.  Candidates whose outputs differ in
  shape or dtype raise ``ChoiceError`` naming the choice point.

Candidates are called with the arguments the choice point is called with, so
a candidate with batch norm takes ``train`` as the other candidates do.
Arrays are passed positionally; Python values (``train``) and keyword
arguments are static: they are closed over by the candidates' ``nn.cond``
branches.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LAYER = "layer"
INPUT = "input"
COLLECTION = "choices"  # the variables collection of the mixture weights and masks


class ChoiceError(ValueError):
  """A choice point that cannot be searched (one line naming it)."""


@dataclasses.dataclass(frozen=True)
class ChoicePoint:
  """What a search needs to know of one choice point of a model.

  Attributes:
    path: the module path of the choice point (``"block1/Choice_0"``).
    label: the forecaster it belongs to (its ``label``, else its path).
    kind: ``"layer"`` (candidate modules) or ``"input"`` (candidate inputs).
    names: one name per candidate.
    num_chosen: candidates a discrete model keeps (1 for a layer choice).
  """
  path: str
  label: str
  kind: str
  names: tuple[str, ...]
  num_chosen: int = 1


@dataclasses.dataclass
class _Context:
  record: list[ChoicePoint] | None = None  # discovery: every choice point called
  fixed: Mapping[str, tuple[int, ...]] | None = None  # label -> kept candidates


_CONTEXT: contextvars.ContextVar[_Context] = contextvars.ContextVar("choice_context",
                                                                    default=_Context())


@contextlib.contextmanager
def recording() -> Iterator[list[ChoicePoint]]:
  """Collects the choice points a model calls inside the ``with`` block
  (``spaces.model.discover``)."""
  found: list[ChoicePoint] = []
  token = _CONTEXT.set(_Context(record=found))
  try:
    yield found
  finally:
    _CONTEXT.reset(token)


@contextlib.contextmanager
def fixed(choices: Mapping[str, Sequence[int]]) -> Iterator[None]:
  """Inside the block, the choice point of label ``l`` runs its candidates
  ``choices[l]`` only (``FixedModel``)."""
  token = _CONTEXT.set(_Context(fixed={k: tuple(v) for k, v in choices.items()}))
  try:
    yield
  finally:
    _CONTEXT.reset(token)


def _path(module: nn.Module) -> str:
  return "/".join(str(p) for p in module.scope.path)


def _candidate_names(candidates: Sequence[Any], names: Sequence[str] | None) -> tuple[str, ...]:
  if names is not None:
    return tuple(str(n) for n in names)
  base = [getattr(c, "__name__", None) or type(c).__name__ for c in candidates]
  return tuple(f"{b}_{i}" if base.count(b) > 1 else b for i, b in enumerate(base))


def _split_static(args: tuple) -> tuple[list, Any]:
  """The array arguments, and a function that puts them back among the
  others (Python flags such as ``train`` stay static under ``nn.cond``)."""
  static = lambda a: isinstance(a, (bool, int, float, str, type(None)))
  arrays = [a for a in args if not static(a)]

  def call(dynamic):
    it = iter(dynamic)
    return tuple(a if static(a) else next(it) for a in args)
  return arrays, call


def _per_example(u: jax.Array, like: jax.Array) -> jax.Array:
  """``u`` ``[B]`` shaped to multiply ``like`` ``[B, ...]``."""
  return u.reshape(u.shape + (1,) * (like.ndim - 1))


class _ChoiceBase(nn.Module):
  """What both kinds share: the label, the record, the mixture weights."""

  def _key(self) -> str:
    return self.label if self.label is not None else _path(self)

  def _record(self, kind: str, names: tuple[str, ...], num_chosen: int) -> None:
    ctx = _CONTEXT.get()
    if ctx.record is not None and all(p.path != _path(self) for p in ctx.record):
      ctx.record.append(ChoicePoint(_path(self), self._key(), kind, names, num_chosen))

  def _fixed(self) -> tuple[int, ...] | None:
    fixed = _CONTEXT.get().fixed
    if fixed is None:
      return None
    if self._key() not in fixed:
      raise ChoiceError(f"choice point {_path(self)!r} (label {self._key()!r}) has no choice "
                        f"in the fixed model's choices {sorted(fixed)}")
    return fixed[self._key()]

  def _mixture(self) -> tuple[jax.Array, jax.Array] | None:
    """``(u [B, N], mask [N])`` from the ``"choices"`` collection, if given."""
    if not self.has_variable(COLLECTION, "u"):
      return None
    return self.get_variable(COLLECTION, "u"), self.get_variable(COLLECTION, "mask")

  def _same_shapes(self, outs: Sequence[Any], names: Sequence[str]) -> None:
    shapes = [jax.tree.map(lambda a: (a.shape, a.dtype), o) for o in outs]
    for name, s in zip(names[1:], shapes[1:]):
      if s != shapes[0]:
        raise ChoiceError(
            f"choice point {_path(self)!r}: candidate {name!r} gives {_describe(s)} where "
            f"candidate {names[0]!r} gives {_describe(shapes[0])}; every candidate of a "
            f"choice point must give the same shape and dtype")


def _describe(shapes: Any) -> str:
  leaves = jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2
                           and isinstance(x[0], tuple))
  return ", ".join(f"{d}{list(s)}" for s, d in leaves)


class Choice(_ChoiceBase):
  """A layer choice: one of ``candidates`` (Flax modules, or functions
  without parameters) applied to the arguments the choice point gets.

  Attributes:
    candidates: the experts; each is called as ``candidate(*args, **kwargs)``.
    label: the forecaster's name; choice points of one label share their
      architecture parameters (default: the module path, one per point).
    names: one name per candidate for genotypes and pictures (default: the
      class or function names, numbered where they repeat).
  """
  candidates: Sequence[Any]
  label: str | None = None
  names: Sequence[str] | None = None

  def setup(self):
    if not self.candidates:
      raise ChoiceError(f"choice point {_path(self)!r} has no candidates")
    self.experts = [c.clone(parent=self, name=f"candidate{i}") if isinstance(c, nn.Module)
                    else c for i, c in enumerate(self.candidates)]

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    names = _candidate_names(self.candidates, self.names)
    if len(names) != len(self.candidates):
      raise ChoiceError(f"choice point {_path(self)!r} has {len(self.candidates)} candidates "
                        f"and {len(names)} names")
    self._record(LAYER, names, 1)
    chosen = self._fixed()
    if chosen is not None:
      return self.experts[chosen[0]](*args, **kwargs)
    mixture = self._mixture()
    if mixture is None:  # init: every candidate creates its parameters
      outs = [e(*args, **kwargs) for e in self.experts]
      self._same_shapes(outs, names)
      return jax.tree.map(lambda *ys: sum(ys) / len(ys), *outs)
    u, mask = mixture
    return self._mixed(u, mask, args, kwargs)

  def _mixed(self, u: jax.Array, mask: jax.Array, args: tuple, kwargs: dict) -> Any:
    """``sum_i u_i f_i(x)`` over the live candidates (XNAS eq. 1), summed in
    ``u``'s dtype as the supernet's mixed operation does, each candidate
    under ``nn.cond`` on its mask bit (a masked one costs nothing)."""
    total, dtypes = None, None
    rngs = {"dropout": jax.random.key(0), "noise": jax.random.key(0)}
    arrays, call = _split_static(args)
    for i, expert in enumerate(self.experts):
      if isinstance(expert, nn.Module):
        shape = jax.eval_shape(
            lambda v, a, e=expert: e.clone(parent=None).apply(v, *call(a), **kwargs,
                                                              mutable=True, rngs=rngs)[0],
            expert.variables, arrays)
        dtypes = dtypes or jax.tree.map(lambda s: s.dtype, shape)

        def on(mdl, a, i=i):
          out = mdl.experts[i](*call(a), **kwargs)
          return jax.tree.map(lambda y: _per_example(u[:, i], y) * y.astype(u.dtype), out)

        def off(mdl, a, shape=shape):
          del mdl, a
          return jax.tree.map(lambda s: jnp.zeros(s.shape, u.dtype), shape)

        contrib = nn.cond(mask[i], on, off, self, arrays)
      else:  # a function without parameters (an identity, a pooling)
        out = expert(*args, **kwargs)
        dtypes = dtypes or jax.tree.map(lambda y: y.dtype, out)
        contrib = jax.tree.map(
            lambda y: jnp.where(mask[i], _per_example(u[:, i], y) * y.astype(u.dtype), 0.0), out)
      total = contrib if total is None else jax.tree.map(jnp.add, total, contrib)
    return jax.tree.map(lambda t, d: t.astype(d), total, dtypes)  # the candidates' dtype


class InputChoice(_ChoiceBase):
  """An input choice: ``num_chosen`` of the inputs it is called with,
  summed (NNI's ``InputChoice`` with ``reduction="sum"``).  In the search,
  the mixture ``sum_i u_i x_i``; a discrete model keeps the ``num_chosen``
  inputs of largest weight.

  Attributes:
    num_chosen: inputs a discrete model keeps.
    label: as ``Choice.label``.
    names: one name per input (default ``input0``, ``input1``, ...).
  """
  num_chosen: int = 1
  label: str | None = None
  names: Sequence[str] | None = None

  def __call__(self, inputs: Sequence[jax.Array]) -> jax.Array:
    inputs = list(inputs)
    names = tuple(self.names) if self.names is not None else tuple(
        f"input{i}" for i in range(len(inputs)))
    if not 1 <= self.num_chosen <= len(inputs) or len(names) != len(inputs):
      raise ChoiceError(f"input choice {_path(self)!r} chooses {self.num_chosen} of "
                        f"{len(inputs)} inputs ({len(names)} names)")
    self._record(INPUT, names, self.num_chosen)
    chosen = self._fixed()
    if chosen is not None:
      return sum(inputs[i] for i in chosen)
    mixture = self._mixture()
    if mixture is None:
      self._same_shapes(inputs, names)
      return sum(inputs) * (self.num_chosen / len(inputs))
    u, mask = mixture
    total = sum(jnp.where(mask[i], _per_example(u[:, i], x) * x.astype(u.dtype), 0.0)
                for i, x in enumerate(inputs))
    return total.astype(inputs[0].dtype)


class FixedModel(nn.Module):
  """A user's model with its choices fixed: a plain Flax module whose
  choice points run their chosen candidates only (no mixture, no parameters
  for the candidates not chosen).  Called as the model is.

  Attributes:
    model: the user's model.
    choices: ``(label, chosen candidate indices)`` per forecaster.
  """
  model: nn.Module
  choices: tuple[tuple[str, tuple[int, ...]], ...]

  @nn.compact
  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    with fixed(dict(self.choices)):
      return self.model(*args, **kwargs)

