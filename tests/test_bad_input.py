"""Bad input to both programs: one line naming the bad value, exit status 2.

Every range rule of the search and retraining configs is exercised in
process (``validate_config``) with a value of each class that breaks it; the
command lines are run for what only they see (config files, workdirs).
"""
import os
import re
import subprocess
import sys

import pytest

from xnas_jax import arch_optimizers
from xnas_jax import budget
from xnas_jax import hypergrad
from xnas_jax import search_setup
from xnas_jax import selection
from xnas_jax import config_checks, config_defaults, retrain, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One bad value per class of rule (wrong sign, zero, out of range, wrong type).
BAD = {
    "positive": [0, -1.0, float("nan")], "nonnegative": [-1e-3, float("inf")],
    "positive_int": [0, -2, 1.5], "nonnegative_int": [-5, 0.5],
    "unit_open": [1.0, -0.1], "unit_closed": [0.0, 1.5], "bool": [1],
    "optional_positive": [0.0, -1.0], "optional_nonnegative_int": [-1, 2.5],
    "optional_bool": [1, "yes"],
}


def _cases(rules):
  return [(key, value) for key, kind in rules for value in BAD[kind]]


def _set(config, key, value):
  *parents, last = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[last] = value


def _search_rules():
  """Every section's rules; an architecture optimizer's keys as ``key@name``."""
  rules = (list(search_setup.RULES) + list(hypergrad.RULES) + list(selection.RULES)
           + list(budget.RULES))
  for name in arch_optimizers.names():
    own = arch_optimizers.COMMON_RULES + tuple(arch_optimizers.get(name).RULES)
    rules += [(f"arch_optimizer.{k}@{name}", kind) for k, kind in own]
  return rules


@pytest.mark.parametrize("key,value", _cases(_search_rules()))
def test_every_search_key_refuses_its_bad_values(key, value):
  config = config_defaults.base_config()
  key, _, optimizer = key.partition("@")
  if optimizer:
    config.arch_optimizer.name = optimizer
  _set(config, key, value)
  stored = config_checks.get(config, key)  # as the config holds it (0 -> 0.0 for a float key)
  with pytest.raises(train.ConfigError, match=f"^{re.escape(key)} must be .*, got "
                                              f"{re.escape(repr(stored))}$"):
    train.validate_config(config)


@pytest.mark.parametrize("key,value", _cases(retrain._RULES))  # pylint: disable=protected-access
def test_every_retraining_key_refuses_its_bad_values(key, value):
  config = config_defaults.eval_config()
  _set(config, key, value)
  stored = config_checks.get(config, key)
  with pytest.raises(retrain.ConfigError, match=f"^{re.escape(key)} must be .*, got "
                                                f"{re.escape(repr(stored))}$"):
    retrain.validate_config(config)


def test_the_rules_cover_every_key_of_the_defaults():
  """A key added to a config later needs a rule (or a choice check)."""
  choices = {"dataset", "data_dir", "space", "op_set", "topology", "arch_sharing",
             "compute_dtype",
             "depthwise_impl",
             "arch_grads_program",
             "arch_gradient", "selection", "hypergrad.solver", "arch_optimizer.name",
             "arch_optimizer.reg_type", "arch_optimizer.perturb_mixture",
             "arch_optimizer.sgas_criterion", "pt.schedule", "budget.metric"}
  ruled = {k.partition("@")[0] for k, _ in _search_rules()} | choices
  flat = config_checks_keys(config_defaults.base_config())
  assert flat - ruled == set()
  ruled = {k for k, _ in retrain._RULES} | {"dataset", "data_dir", "space", "network",  # pylint: disable=protected-access
                                           "lr_schedule"}
  assert config_checks_keys(config_defaults.eval_config()) - ruled == set()


def config_checks_keys(config, prefix=""):
  keys = set()
  for k, v in config.items():
    if hasattr(v, "items"):
      keys |= config_checks_keys(v, f"{prefix}{k}.")
    else:
      keys.add(f"{prefix}{k}")
  return keys


def test_unknown_names_are_refused():
  config = config_defaults.base_config()
  config.depthwise_impl = "fft"
  with pytest.raises(train.ConfigError, match="unknown depthwise_impl 'fft'"):
    train.validate_config(config)
  config.depthwise_impl, config.arch_gradient = "shifted", "darts_second_order"
  with pytest.raises(train.ConfigError, match="depthwise_impl='shifted' has no forward-mode"):
    train.validate_config(config)
  config = config_defaults.base_config()
  config.arch_grads_program = "split"
  with pytest.raises(train.ConfigError, match="unknown arch_grads_program 'split'"):
    train.validate_config(config)
  config = config_defaults.base_config()
  config.arch_optimizer.name, config.arch_optimizer.reg_type = "drnas", "l1"
  with pytest.raises(train.ConfigError, match="unknown arch_optimizer.reg_type 'l1'"):
    train.validate_config(config)
  with pytest.raises(ValueError, match="unknown x 'b'"):
    config_checks.check_choice({"x": "b"}, "x", ("a",))


def _run(program, args, tmp_path):
  proc = subprocess.run([sys.executable, "-m", program] + args, capture_output=True, text=True,
                        timeout=300, cwd=str(tmp_path))
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  return proc.returncode, lines


@pytest.mark.parametrize("program", ["xnas_jax.main", "xnas_jax.retrain_main"])
def test_cli_config_files_and_workdirs(program, tmp_path):
  config = os.path.join(ROOT, "configs", "digits.py" if program == "xnas_jax.main"
                        else "digits_eval.py")
  genotype = [] if program == "xnas_jax.main" else ["--genotype", str(tmp_path / "g.json")]
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  (tmp_path / "g.json").write_text(
      '{"normal": [["skip_connect", 0], ["skip_connect", 1], ["skip_connect", 0], '
      '["skip_connect", 1], ["skip_connect", 0], ["skip_connect", 1], ["skip_connect", 0], '
      '["skip_connect", 1]], "normal_concat": [2, 3, 4, 5], "reduce": [["max_pool_3x3", 0], '
      '["max_pool_3x3", 1], ["max_pool_3x3", 0], ["max_pool_3x3", 1], ["max_pool_3x3", 0], '
      '["max_pool_3x3", 1], ["max_pool_3x3", 0], ["max_pool_3x3", 1]], "reduce_concat": [2, 3, 4, 5]}')
  (tmp_path / "a_file").write_text("")
  for args, message in [
      (["--config", "/no/such/file.py", "--workdir", str(tmp_path / "w")],
       "cannot load --config /no/such/file.py: [Errno 2] No such file or directory"),
      (["--config", str(tmp_path / "broken.py"), "--workdir", str(tmp_path / "w")],
       "SyntaxError"),
      (["--config", config, "--workdir", str(tmp_path / "a_file")],
       "exists and is not a directory"),
      (["--config", config, "--workdir", str(tmp_path / "w"), "--config.num_devices=-1"],
       "num_devices must be an integer >= 0, got -1"),
      (["--config", config, "--workdir", str(tmp_path / "w"), "--config.dataset=folder:/no/dir"],
       "folder:/no/dir is not a directory"),
  ]:
    status, lines = _run(program, args + genotype, tmp_path)
    assert status == 2 and len(lines) == 1 and message in lines[0], (args, lines)
