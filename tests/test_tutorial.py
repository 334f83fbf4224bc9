"""The tutorial notebook runs and draws (see tests/test_notebooks.py)."""
from test_notebooks import TUTORIAL, run_and_check


def test_the_tutorial_runs_and_draws(tmp_path):
  run_and_check(TUTORIAL, tmp_path)
