"""The own-model tutorial notebook runs, searches with XNAS and DARTS, draws
and retrains (see tests/test_notebooks.py)."""
from test_notebooks import OWN_MODEL_TUTORIAL, run_and_check


def test_the_own_model_tutorial_runs_and_draws(tmp_path):
  run_and_check(OWN_MODEL_TUTORIAL, tmp_path)
