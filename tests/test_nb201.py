"""NAS-Bench-201 (``xnas_jax.spaces.nb201``): its arch strings, its networks
against counts and cell outputs derived by hand, its selection, and searches
of the space end to end."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_configs import tiny_config
from xnas_jax import evalnet
from xnas_jax import retrain
from xnas_jax import spaces
from xnas_jax import train
from xnas_jax.spaces import nb201

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ONE_CONV1 = "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def _hand_count(conv3: int, conv1: int, c: int = 16, n: int = 5, classes: int = 10) -> int:
  """The TinyNetwork's parameters on 32x32x3 images, counted by hand: stem
  (3x3 conv 3->C, BN), per stage of width w an edge's 3x3 conv w*w*9 + BN 2w
  (1x1: w*w + 2w) in each of N cells, the two residual blocks (two 3x3 convs
  with BN, a 1x1 shortcut conv), the last BN and the classifier."""
  widths = (c, 2 * c, 4 * c)
  total = 3 * c * 9 + 2 * c
  total += sum(n * (conv3 * (9 * w * w + 2 * w) + conv1 * (w * w + 2 * w)) for w in widths)
  for a, b in ((c, 2 * c), (2 * c, 4 * c)):
    total += (9 * a * b + 2 * b) + (9 * b * b + 2 * b) + a * b
  return total + 2 * 4 * c + 4 * c * classes + classes


@pytest.mark.parametrize("arch,conv3,conv1", [(ALL_CONV3, 6, 0), (ALL_NONE, 0, 0),
                                              (ARCH, 3, 0), (ONE_CONV1, 0, 1)])
def test_tiny_network_parameter_count(arch, conv3, conv1):
  """The release's counts: 1,531,546 for six 3x3 convs and 73,306 for none
  (NAS-Bench-201's largest and smallest CIFAR-10 networks, 1.53 and 0.07 MB)."""
  want = _hand_count(conv3, conv1)
  if arch == ALL_CONV3:
    assert want == 1531546
  if arch == ALL_NONE:
    assert want == 73306
  g = nb201.Genotype.parse(arch)
  net = nb201.eval_network(g, 10, 16, 5, auxiliary=True)
  k = jax.random.key(0)
  shapes = jax.eval_shape(lambda: net.init({"params": k}, jnp.zeros((1, 32, 32, 3)), False))
  assert evalnet.parameter_count(shapes["params"]) == want
  assert nb201.parameter_count(g) == want  # the budget's cost model agrees


def test_arch_strings_round_trip_and_bad_ones_name_the_fault():
  g = nb201.Genotype.parse(ARCH)
  assert g.arch == ARCH and str(g) == ARCH
  assert g.nodes[2] == (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2))
  assert spaces.parse_genotype(ARCH) == g
  assert spaces.parse_genotype(json.dumps(g.to_dict())) == g
  assert spaces.parse_genotype(g.to_json()) == g
  bad = {
      ARCH.replace("avg_pool_3x3", "max_pool_3x3"): "unknown operation 'max_pool_3x3'",
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|": "has 2 nodes; expected 3",
      ARCH[:-1]: "malformed NAS-Bench-201 arch string",
      ARCH.replace("~1|+", "-1|+"): "malformed edge 'avg_pool_3x3-1'",
      ARCH.replace("skip_connect~2", "skip_connect~1"): "node 3 of arch string",
  }
  for text, message in bad.items():
    with pytest.raises(ValueError, match=message):
      nb201.Genotype.parse(text)


def test_magnitude_selection_takes_the_strongest_op_none_included():
  """The release's ``genotype()``: argmax over every operation of each edge."""
  space = nb201.make_space()
  w = np.full((6, 5), 0.1)
  w[:, 0] = 0.5  # none is strongest everywhere ...
  w[3, 3] = 0.9  # ... but on 0->3, where nor_conv_3x3 is
  alive = np.ones((6, 5), bool)
  alive[5, 0] = False  # none wiped on 2->3: the strongest live op (a tie, noted)
  notes = []
  g = nb201.discretize({"cell": w}, space, {"cell": alive}, notes)
  assert g.arch == "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|skip_connect~2|"
  assert len(notes) == 1 and "2->3" in notes[0]


def _cell_apply(net, x, op):
  """The first searched cell of ``net`` run on ``x`` with every edge one-hot on ``op``."""
  space = net.space
  cell = net.cells[0]
  variables = cell.init(jax.random.key(0), None, x)
  u = jnp.zeros((space.num_edges, x.shape[0], space.num_ops)).at[:, :, space.ops.index(op)].set(1)
  mask = jnp.ones((space.num_edges, space.num_ops), bool)
  return cell.apply(variables, None, x, u, mask, None, True)[0]


def _avg_pool(x):
  """3x3 average pooling, stride 1, padding excluded from the count (NumPy)."""
  b, h, w, c = x.shape
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      win = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, :]
      out[:, i, j, :] = win.mean(axis=(1, 2))
  return out


def test_search_cell_sums_every_earlier_state_and_outputs_the_last_node():
  """Node i = sum_j op(node_j); the output is node 3: with every edge the
  identity, 4x; with none, 0; with average pooling, the DAG computed in NumPy."""
  space = nb201.make_space()
  net = nb201.Supernet(space, 10, channels=4, num_cells=1)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
  np.testing.assert_allclose(_cell_apply(net, x, "skip_connect"), 4 * x, rtol=1e-6)
  np.testing.assert_array_equal(_cell_apply(net, x, "none"), 0 * x)
  xn = np.asarray(x, np.float64)
  n1 = _avg_pool(xn)
  n2 = _avg_pool(xn) + _avg_pool(n1)
  n3 = _avg_pool(xn) + _avg_pool(n1) + _avg_pool(n2)
  np.testing.assert_allclose(_cell_apply(net, x, "avg_pool_3x3"), n3, rtol=1e-5, atol=1e-6)


def test_supernet_layout_and_shapes():
  """Three stages of N cells with a residual block between them; one
  architecture shared by all 3N cells (XNAS's r = 3N)."""
  space = nb201.make_space()
  net = nb201.Supernet(space, 10, channels=4, num_cells=2)
  assert net.replicas == {"cell": 6}
  assert [type(l).__name__ if not isinstance(l, int) else l for l in net.layers] == [
      "SearchCell", "SearchCell", 8, "SearchCell", "SearchCell", 16, "SearchCell", "SearchCell"]
  x = jnp.zeros((2, 8, 8, 1))
  variables = net.init(jax.random.key(0), x)
  u = {"cell": jnp.full((6, 5), 0.2)}
  logits, _ = jax.jit(lambda v: net.apply(v, x, u))(variables)
  assert logits.shape == (2, 10)
  # the non-affine cell BNs have none of their own parameters; the cells' convs have biases
  conv = variables["params"]["cell0"]["edges0"]["nor_conv_3x3"]
  assert set(conv) == {"Conv_0"} and set(conv["Conv_0"]) == {"kernel", "bias"}


def _run(config, tmp_path, name):
  out = train.train_and_evaluate(config, str(tmp_path / name), progress=False)
  with open(tmp_path / name / "genotype.json") as f:
    written = json.load(f)
  assert written == {"arch": out["genotype"].arch}
  return out


def test_searches_select_and_retrain(tmp_path):
  """One tiny search per path through the loop: XNAS with its wipeout and a
  rebuild on 2 devices (magnitude selection, a picture); SGAS with SDARTS-ADV
  and perturbation selection; then the found cell retrained in its TinyNetwork."""
  c = tiny_config(space="nb201", op_set="nb201", num_cells=1, rebuild_wiped=True, figures=True,
                  num_devices=2)
  c.arch_optimizer.zeta = 1e-3
  out = _run(c, tmp_path, "xnas")
  s = out["summary"]
  assert set(s["arch_learning_rates"]) == {"cell"}
  assert os.path.exists(tmp_path / "xnas" / "genotype.png")
  assert os.path.exists(tmp_path / "xnas" / "report.png")
  # the theory's rate for one cell type replicated 3N times over N = 5 experts
  assert s["arch_learning_rates"]["cell"] > 0

  # SGAS+PT: SGAS decides an edge at the end of each epoch (on SDARTS-ADV's
  # perturbed weight steps) and perturbation its op, then perturbation
  # selection chooses the ops of the edges left (none included: NB201 keeps
  # every edge); the decided edges stay as decided.
  c = tiny_config(space="nb201", op_set="nb201", num_cells=1, selection="perturbation")
  c.arch_optimizer.name = "sgas"
  c.arch_optimizer.perturb_mixture = "adversarial"
  c.arch_optimizer.decision_start_epoch, c.arch_optimizer.decision_interval = 0, 1
  c.pt.tune_epochs = 1
  out = _run(c, tmp_path, "pt")
  with open(tmp_path / "pt" / "metrics.jsonl") as f:
    epochs = [json.loads(line) for line in f]
  made = [d for m in epochs for d in m["op_decisions"]]
  assert [len(m["op_decisions"]) for m in epochs] == [1] * c.epochs  # one decision an epoch
  for d in made:  # each decided edge's op: the one whose removal hurt most
    assert set(d["acc_without"]) == set(nb201.OPS)
    assert d["chosen"] == min(d["acc_without"], key=d["acc_without"].get)
    assert f"{d['chosen']}~{d['edge'][0]}" in out["genotype"].arch
  with open(tmp_path / "pt" / "selection_log.json") as f:
    log = json.load(f)
  assert {e["phase"] for e in log} == {"operation"}  # no topology phase
  assert len([e for e in log if e["chosen"]]) == 6
  decided = [e for e in log if len(e["acc_without"]) == 1]  # SGAS's: one op left to run
  assert [e["edge"] for e in decided] != [] and len(decided) == c.epochs
  assert sorted(e["edge"] for e in decided) == sorted(d["edge"] for d in made)
  assert all("none" in e["acc_without"] for e in log if e not in decided)
  _check_choose_op(c, out["state"], [e for e in range(6)
                                     if list(nb201.make_space().edges[e]) not in
                                     [d["edge"] for d in made]][0])

  e = retrain_config()
  result = retrain.train_and_evaluate(e, out["genotype"], str(tmp_path / "retrain"),
                                      progress=False)
  assert 0.0 <= result["summary"]["test_acc"] <= 1.0
  assert result["summary"]["genotype"] == {"arch": out["genotype"].arch}


def _check_choose_op(config, state, edge):
  """``perturbation.choose_op``'s accuracies against a loop over the
  validation batches of the supernet with one expert's weight zeroed."""
  from xnas_jax import perturbation, search_setup, search_steps  # pylint: disable=import-outside-toplevel
  search = search_setup.build_search(config)
  fns = search_steps.step_functions(search)
  op, accs = perturbation.choose_op(search, state, fns, "cell", edge)
  masks = search_setup.live_masks(search, state)
  u = search.mixture(state["arch"], masks)
  d, b = search.data, config.batch_size
  apply = jax.jit(lambda x, u: search.net.apply(
      {"params": state["params"], "batch_stats": state["batch_stats"]}, x, u, masks, train=True,
      rng=jax.random.key(0))[0])
  for o, name in enumerate(search.net.space.ops):
    u_o = {"cell": u["cell"].at[edge, o].set(0.0)}
    correct = 0
    for i in range(len(d.val) // b):
      x = (jnp.asarray(d.val.images[i * b:(i + 1) * b]) - d.mean) / d.std
      logits = apply(x, u_o)
      correct += int(np.sum(np.argmax(logits, -1) == d.val.labels[i * b:(i + 1) * b]))
    assert accs[name] == pytest.approx(correct / (len(d.val) // b * b), abs=1e-6)
  assert search.net.space.ops[op] == min(accs, key=accs.get)


def retrain_config():
  from xnas_jax import config_defaults  # pylint: disable=import-outside-toplevel
  e = config_defaults.eval_config()
  e.space = "nb201"
  e.channels, e.num_cells, e.epochs, e.batch_size, e.limit = 4, 1, 1, 32, 96
  e.num_devices = 1
  e.figures = False
  return e


def test_bad_input_ends_in_one_line(tmp_path):
  """A malformed arch string, another space's genotype and an op set the
  space does not have: exit code 2 and one line naming the bad value."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cases = [
      (["xnas_jax.retrain_main", "--genotype", ARCH.replace("~2|", "~3|"), "--config",
        "configs/digits_eval.py", "--workdir", str(tmp_path / "a")], "node 3 of arch string"),
      (["xnas_jax.retrain_main", "--genotype", "darts_v2", "--config", "configs/cifar10_nb201_eval.py",
        "--workdir", str(tmp_path / "b")], "a darts genotype cannot be built by the nb201"),
      (["xnas_jax.main", "--config", "configs/digits_nb201.py", "--config.op_set=darts",
        "--workdir", str(tmp_path / "c")], "op_set 'darts' is not NAS-Bench-201's"),
  ]
  root = os.path.join(os.path.dirname(__file__), "..")
  for argv, message in cases:
    p = subprocess.run([sys.executable, "-m", *argv], cwd=root, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], p.stderr


def test_budget_cost_model_prices_a_one_hot_mixture_as_its_genotype():
  """The expected cost of a mixture one-hot on a genotype's ops is that
  genotype's TinyNetwork cost (every edge is kept in NAS-Bench-201), in
  parameters and in multiply-adds; the parameter count is the network's own."""
  from xnas_jax import budget  # pylint: disable=import-outside-toplevel
  space = nb201.make_space()
  g = nb201.Genotype.parse(ARCH)
  chosen = [op for node in g.nodes for op, _ in node]
  u = {"cell": np.eye(space.num_ops)[[space.ops.index(op) for op in chosen]]}
  for metric in ("params", "flops"):
    fixed, per_edge = nb201.edge_costs(space, metric, (32, 32, 3), 10, 16, 5)
    costs = budget.EdgeCosts(metric, fixed, per_edge, 1.0, 1.0)
    want = budget.genotype_cost(g, metric, (32, 32, 3), 10, 16, 5)
    assert float(budget.expected_cost(costs, u)) == pytest.approx(want, rel=1e-6)  # float32
  assert round(budget.genotype_cost(g, "params", (32, 32, 3), 10, 16, 5) * 1e6) == 802426
