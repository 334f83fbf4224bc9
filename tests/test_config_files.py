"""Every file under ``configs/`` loads and passes its runner's checks: the
searches' through ``train.validate_config`` (their space, optimizer,
hypergradient, selection and budget sections included), the retrainings'
through ``retrain.validate_config``."""
import glob
import importlib.util
import os

import pytest

from xnas_jax import retrain
from xnas_jax import train

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_file_passes_its_checks(path):
  config = _load(path)
  if "eval" in os.path.basename(path):
    retrain.validate_config(config)
  else:
    train.validate_config(config)
