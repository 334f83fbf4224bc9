"""A user's own Flax model with choice points (``xnas_jax.choice``,
``spaces.model``): the rewards of a choice point against their definition,
XNAS's horizon and rate counted from the choice points, a model that rebuilds
one DARTS cell against the supernet, searches with several optimizers,
seeds, devices and selections, exact resume, the fixed model, and bad input."""
import json
import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from search_configs import crash_then_resume
from xnas_jax import choice as choice_lib
from xnas_jax import config_defaults
from xnas_jax import ops as ops_lib
from xnas_jax import own_model
from xnas_jax import search_setup
from xnas_jax import search_space
from xnas_jax import search_steps
from xnas_jax import supernet as supernet_lib
from xnas_jax import train
from xnas_jax.choice import Choice, InputChoice
from xnas_jax.spaces import model as model_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("epoch_time_s", "compilations", "compile_s", "step_time_s")


# --- Hand-made models ----------------------------------------------------------


class Lin(nn.Module):
  features: int

  @nn.compact
  def __call__(self, h, train):
    del train
    return nn.Dense(self.features, use_bias=False)(h)


class Tanh(nn.Module):
  features: int

  @nn.compact
  def __call__(self, h, train):
    del train
    return jnp.tanh(nn.Dense(self.features, use_bias=False)(h))


def relu(h, train):
  del train
  return nn.relu(h)


def sin(h, train):
  del train
  return jnp.sin(h)


class Hand(nn.Module):
  """Two choice points sharing the label "shared" (3 candidates, one without
  parameters), one of its own ("solo", 2), a skip input choice."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=True):
    h = nn.Dense(6, name="inp")(x.reshape(x.shape[0], -1))
    a = Choice([Tanh(6), Lin(6), relu], label="shared", name="p1")(h, train)
    b = Choice([Tanh(6), Lin(6), relu], label="shared", name="p2")(a, train)
    c = Choice([Lin(6), sin], label="solo", name="p3")(b, train)
    d = InputChoice(label="skip", name="p4")([h, c])
    return nn.Dense(self.num_classes, name="out")(d)


def _hand_forward(params, x, u):
  """``Hand`` written out by hand: ``u[label]`` ``[R, B, N]``."""
  k = lambda *path: params[path[0]][path[1]]["Dense_0"]["kernel"]
  h = x.reshape(x.shape[0], -1) @ params["inp"]["kernel"] + params["inp"]["bias"]

  def shared(z, p, w):
    outs = [jnp.tanh(z @ k(p, "candidate0")), z @ k(p, "candidate1"), nn.relu(z)]
    return sum(w[:, i, None] * o for i, o in enumerate(outs))

  a = shared(h, "p1", u["shared"][0])
  b = shared(a, "p2", u["shared"][1])
  c = u["solo"][0][:, 0, None] * (b @ k("p3", "candidate0")) + u["solo"][0][:, 1, None] * jnp.sin(b)
  d = u["skip"][0][:, 0, None] * h + u["skip"][0][:, 1, None] * c
  return d @ params["out"]["kernel"] + params["out"]["bias"]


def _hand_net(num_classes=10):
  spec, kwargs = model_space.spec_of(Hand(num_classes))
  points = model_space.discover(Hand(num_classes), (4, 4, 1), num_classes)
  return model_space.ModelSupernet(model_space.space_from(points, spec, kwargs), num_classes)


def test_the_space_of_a_model_and_the_rewards_of_its_choice_points():
  net = _hand_net()
  space = net.space
  assert space.cell_types == ("shared", "solo", "skip")
  assert net.replicas == {"shared": 2, "solo": 1, "skip": 1}
  assert [p.path for p in space.points] == ["p1", "p2", "p3", "p4"]
  assert space.available_mask("solo").tolist() == [[True, True, False]]
  x = jax.random.normal(jax.random.key(1), (5, 4, 4, 1))
  y = jnp.arange(5) % 10
  variables = net.init(jax.random.key(0), x)
  assert "choices" not in variables and set(variables["params"]["p3"]) == {"candidate0"}
  u = {t: jax.random.dirichlet(jax.random.key(i), jnp.ones(3), (net.replicas[t], 5))
       * net.default_masks()[t][0] for i, t in enumerate(space.cell_types)}
  u_full = {t: u[t][:, :, None, :] for t in u}  # [R, B, E=1, N]
  loss = lambda uf: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
      net.apply(variables, x, uf, train=False)[0], y))
  g_u = jax.grad(loss)(u_full)
  hand = lambda uu: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
      _hand_forward(variables["params"], x, uu), y))
  expected = jax.grad(hand)({t: u[t][..., :n] for t, n in (("shared", 3), ("solo", 2),
                                                           ("skip", 2))})
  for t, n in (("shared", 3), ("solo", 2), ("skip", 2)):
    np.testing.assert_allclose(g_u[t][:, :, 0, :n], expected[t], rtol=1e-5, atol=1e-6)
    assert not np.any(g_u[t][:, :, 0, n:])  # candidates a label does not have
  # The reward is -grad_p(loss) . f_i(x) (XNAS Alg. 1 line 8), at the point "solo".
  params = variables["params"]
  h = x.reshape(5, -1) @ params["inp"]["kernel"] + params["inp"]["bias"]
  k = lambda p, c: params[p][c]["Dense_0"]["kernel"]
  sh = lambda z, w, p: sum(w[:, i, None] * o for i, o in enumerate(
      [jnp.tanh(z @ k(p, "candidate0")), z @ k(p, "candidate1"), nn.relu(z)]))
  b_in = sh(sh(h, u["shared"][0], "p1"), u["shared"][1], "p2")
  experts = [b_in @ k("p3", "candidate0"), jnp.sin(b_in)]

  def rest(p):
    d = u["skip"][0][:, 0, None] * h + u["skip"][0][:, 1, None] * p
    logits = d @ params["out"]["kernel"] + params["out"]["bias"]
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  p = sum(u["solo"][0][:, i, None] * f for i, f in enumerate(experts))
  g_p = jax.grad(rest)(p)
  rewards = -jnp.stack([jnp.sum(g_p * f, -1) for f in experts], -1)
  np.testing.assert_allclose(-g_u["solo"][0, :, 0, :2], rewards, rtol=1e-5, atol=1e-6)
  # A masked candidate contributes nothing, and its parameters get no gradient.
  masks = dict(net.default_masks(), solo=jnp.asarray([[False, True, False]]))
  out = net.apply(variables, x, u_full, masks, train=False)[0]
  u_off = dict(u, solo=u["solo"].at[..., 0].set(0.0))
  np.testing.assert_allclose(out, _hand_forward(params, x, {t: u_off[t] for t in u}),
                             rtol=1e-5, atol=1e-6)
  g_params = jax.grad(lambda p: jnp.sum(net.apply(dict(variables, params=p), x, u_full, masks,
                                                  train=False)[0]))(params)
  assert not np.any(g_params["p3"]["candidate0"]["Dense_0"]["kernel"])


def test_xnas_counts_its_horizon_and_rate_from_the_choice_points_and_examples():
  config = config_defaults.model_config()
  config.model, config.model_kwargs = "test_own_model:Hand", {}
  config.limit, config.batch_size, config.epochs = 200, 16, 3
  search = search_setup.build_search(config)
  steps = search.steps_per_epoch
  for t, r, n in (("shared", 2, 3), ("solo", 1, 2), ("skip", 1, 2)):
    horizon = steps * 16 * 3 * r  # d E r_c: a reward per example, epoch and choice point
    assert search.arch_opt.horizons[t] == horizon
    assert search.arch_opt.learning_rates[t] == pytest.approx(
        math.sqrt(2 * math.log(n) / horizon))  # eq. 4 with L = 1


# --- One DARTS cell as a user's model ---------------------------------------------


OPS = search_space.OP_SETS["s3"]  # none, skip_connect, sep_conv_3x3
C = 4


def _zero(x, train):
  del train
  return jnp.zeros_like(x)


class OneCell(nn.Module):
  """The supernet of one normal DARTS cell of op set S3, written by a user:
  a choice point per edge over the cell's operations."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=True):
    s = supernet_lib.Stem(3 * C, name="stem")(x, train)
    states = [ops_lib.ReLUConvBN(C, name="pre0")(s, train),
              ops_lib.ReLUConvBN(C, name="pre1")(s, train)]
    for k, (src, dst) in enumerate(search_space.darts_edges()):
      cands = [_zero if op == "none" else ops_lib.make_op(op, C, 1, depthwise_impl="grouped")
               for op in OPS]
      y = Choice(cands, label=f"edge{k}", names=OPS, name=f"edge{k}")(states[src], train)
      if dst == len(states):
        states.append(y)
      else:
        states[dst] = states[dst] + y
    out = jnp.concatenate(states[2:], axis=-1)
    return supernet_lib.Head(self.num_classes, name="head")(out)


def test_a_model_that_builds_one_darts_cell_equals_the_supernet():
  space = search_space.get_search_space("s3")
  sup = supernet_lib.Supernet(space, 10, channels=C, num_cells=1, depthwise_impl="grouped")
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  y = jnp.arange(3)
  sv = sup.init(jax.random.key(1), x)
  spec, kwargs = model_space.spec_of(OneCell())
  net = model_space.ModelSupernet(model_space.space_from(
      model_space.discover(OneCell(), (8, 8, 1), 10), spec, kwargs), 10)
  mv = net.init(jax.random.key(2), x)

  def to_model(tree):  # the supernet's stacked edges, one choice point each
    out = {"stem": tree["stem"], "pre0": tree["cell0"]["pre0"], "pre1": tree["cell0"]["pre1"]}
    if "head" in tree:
      out["head"] = tree["head"]
    for k in range(space.num_edges):
      out[f"edge{k}"] = {f"candidate{i}": jax.tree.map(lambda a, k=k: a[k],
                                                       tree["cell0"]["edges0"][op])
                         for i, op in enumerate(OPS) if op in tree["cell0"]["edges0"]
                         and jax.tree.leaves(tree["cell0"]["edges0"][op])}
    return out
  params, stats = to_model(sv["params"]), to_model(sv["batch_stats"])
  assert jax.tree.structure(params) == jax.tree.structure(mv["params"])
  u = jax.nn.softmax(jax.random.normal(jax.random.key(3), (space.num_edges, len(OPS))))
  u_sup = {t: jnp.broadcast_to(u, (1, 3) + u.shape) for t in space.cell_types}
  u_mod = {f"edge{k}": jnp.broadcast_to(u[k], (1, 3, 1, len(OPS)))
           for k in range(space.num_edges)}

  def sup_loss(p, uu):
    logits, st = sup.apply({"params": p, "batch_stats": sv["batch_stats"]}, x, uu, train=True)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)), (logits, st)

  def mod_loss(p, uu):
    logits, st = net.apply({"params": p, "batch_stats": stats}, x, uu, train=True)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)), (logits, st)
  (ls, (lg_s, st_s)), (gp_s, gu_s) = jax.value_and_grad(sup_loss, (0, 1), has_aux=True)(
      sv["params"], u_sup)
  (lm, (lg_m, st_m)), (gp_m, gu_m) = jax.value_and_grad(mod_loss, (0, 1), has_aux=True)(
      params, u_mod)
  np.testing.assert_allclose(lg_m, lg_s, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(lm, ls, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
               gp_m, to_model(gp_s))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               st_m, to_model(st_s))
  for k in range(space.num_edges):
    np.testing.assert_allclose(gu_m[f"edge{k}"][0, :, 0], gu_s["normal"][0, :, k],
                               rtol=2e-4, atol=1e-6)


# --- Searches -------------------------------------------------------------------


def _config(**overrides):
  c = config_defaults.model_config("test_own_model:Hand")
  c.limit, c.batch_size, c.epochs, c.num_devices = 160, 16, 2, 1
  c.figures, c.tensorboard = False, False
  for k, v in overrides.items():
    *parents, last = k.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[last] = v
  return c


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in f]


def test_searches_of_a_model_resume_exactly_and_give_a_fixed_model(tmp_path, monkeypatch):
  """XNAS over 2 seeds on 2 devices, stopped in its second epoch and
  resumed, against an uninterrupted run; the fixed model of its genotype."""
  config = _config(num_seeds=2, num_devices=2, figures=True)
  resumed = crash_then_resume(config, str(tmp_path / "resumed"), monkeypatch)
  whole = train.train_and_evaluate(config, str(tmp_path / "whole"), progress=False)
  assert _lines(str(tmp_path / "resumed")) == _lines(str(tmp_path / "whole"))
  assert [g.to_dict() for g in resumed["genotypes"]] == [g.to_dict() for g in whole["genotypes"]]
  g = whole["genotypes"][0]
  assert set(g.to_dict()["choices"]) == {"shared", "solo", "skip"}
  assert os.path.exists(tmp_path / "whole" / "genotype_seed0.png")
  assert os.path.exists(tmp_path / "whole" / "report_seed0.png")
  # The fixed model: a plain Flax module, parameters of the chosen candidates only.
  fixed = own_model.fixed(Hand(), str(tmp_path / "whole" / "genotype_seed0.json"))
  x = jnp.ones((2, 4, 4, 1))
  v = fixed.init(jax.random.key(0), x)
  chosen = dict(g.choices)
  for point, label in (("p1", "shared"), ("p2", "shared"), ("p3", "solo")):
    has = set(v["params"]["model"].get(point, {}))
    assert has == ({f"candidate{chosen[label][0]}"} if chosen[label][0] in
                   {"shared": (0, 1), "solo": (0,)}[label] else set())
  assert fixed.apply(v, x).shape == (2, 10)
  assert "choices" not in v


@pytest.mark.parametrize("name,overrides", [
    ("darts_second_order", {"arch_optimizer.name": "darts_adam",
                            "arch_gradient": "darts_second_order"}),
    ("gdas_pt", {"arch_optimizer.name": "gdas", "selection": "perturbation",
                 "pt.tune_epochs": 1}),
    ("sgas_pt", {"arch_optimizer.name": "sgas", "selection": "perturbation",
                 "arch_optimizer.decision_start_epoch": 0,
                 "arch_optimizer.decision_interval": 1, "epochs": 3}),
])
def test_every_kind_of_search_runs_on_a_model(name, overrides, tmp_path):
  out = train.train_and_evaluate(_config(**overrides), str(tmp_path / name), progress=False)
  g = out["genotype"]
  lines = _lines(str(tmp_path / name))
  assert len(lines) == _config(**overrides).epochs
  assert all(np.isfinite(l["val_loss"]) for l in lines)
  assert set(dict(g.choices)) == {"shared", "solo", "skip"}
  assert g.to_dict()["choices"]["solo"]["chosen"][0] in ("Lin", "sin")


# --- Bad input ------------------------------------------------------------------


class NoChoice(nn.Module):
  @nn.compact
  def __call__(self, x, train=True):
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


class BadShapes(nn.Module):
  @nn.compact
  def __call__(self, x, train=True):
    h = x.reshape(x.shape[0], -1)
    h = Choice([Lin(6), Lin(7)], name="widths")(h, train)
    return nn.Dense(10)(h)


class BadLabel(nn.Module):
  @nn.compact
  def __call__(self, x, train=True):
    h = x.reshape(x.shape[0], -1)
    h = Choice([Lin(6), Tanh(6)], label="same", name="two")(h, train)
    h = Choice([Lin(6), Tanh(6), relu], label="same", name="three")(h, train)
    return nn.Dense(10)(h)


@pytest.mark.parametrize("model,message", [
    ("NoChoice", "model NoChoice has no choice point: place xnas_jax.Choice or "
                 "xnas_jax.InputChoice modules where its architecture is open"),
    ("BadShapes", "choice point 'widths': candidate 'Lin_1' gives float32[2, 7] where "
                  "candidate 'Lin_0' gives float32[2, 6]; every candidate of a choice point "
                  "must give the same shape and dtype"),
    ("BadLabel", "choice point 'three' shares label 'same' with 'two' but has 3 layer "
                 "candidates choosing 1 where it has 2 layer candidates choosing 1"),
    ("Missing", "model 'test_own_model:Missing': 'test_own_model' has no 'Missing'"),
])
def test_a_model_that_cannot_be_searched_is_one_line(model, message):
  config = _config()
  config.model = f"test_own_model:{model}"
  with pytest.raises(train.ConfigError) as e:
    search_setup.build_search(config)  # validates the config first
  assert str(e.value) == message


def test_the_cli_searches_a_model_named_on_the_command_line_and_refuses_a_bad_one(tmp_path):
  cmd = [sys.executable, "-m", "xnas_jax.main", "--config",
         os.path.join(ROOT, "configs", "digits_own_model.py"), "--noprogress",
         "--config.limit=160", "--config.batch_size=16", "--config.epochs=1",
         "--config.figures=False", "--config.tensorboard=False", "--config.num_devices=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([os.path.dirname(__file__),
                                         os.environ.get("PYTHONPATH", "")]))
  own = tmp_path / "no_choice.py"  # a config file of one's own: the model takes no kwargs
  own.write_text("from xnas_jax import config_defaults\n\n\ndef get_config():\n"
                 "  return config_defaults.model_config('test_own_model:NoChoice')\n")
  bad_cmd = [cmd[0], "-m", "xnas_jax.main", "--config", str(own)] + cmd[5:]
  bad = subprocess.run(bad_cmd + ["--workdir", str(tmp_path / "bad")],
                       capture_output=True, text=True, env=env, timeout=300)
  assert bad.returncode == 2, bad.stderr
  err = [l for l in bad.stderr.strip().splitlines() if not l.startswith("WARNING:absl")]
  assert err == ["xnas-search: error: model NoChoice has no choice point: place "
                 "xnas_jax.Choice or xnas_jax.InputChoice modules where its architecture "
                 "is open"]
  good = subprocess.run(cmd + ["--workdir", str(tmp_path / "good"),
                               "--config.model=xnas_jax.example_models:ChoiceCNN"],
                        capture_output=True, text=True, env=env, timeout=600)
  assert good.returncode == 0, good.stderr
  with open(tmp_path / "good" / "genotype.json") as f:
    g = json.load(f)
  assert set(g["choices"]) == {"layer0", "layer1", "layer2", "skip"}
  assert g["model"] == "xnas_jax.example_models:ChoiceCNN"
