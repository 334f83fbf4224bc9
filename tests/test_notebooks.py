"""The toy notebooks are stored without outputs, run, and draw their figures."""
import os

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tutorials run from files of their own (tests/test_tutorial*.py), so that
# xdist (--dist loadfile) can give them to the other worker.
TUTORIAL = "tutorial_custom_optimizer.ipynb"
OWN_MODEL_TUTORIAL = "tutorial_own_model.ipynb"  # tests/test_tutorial_own_model.py
NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks"))
                   if f.endswith(".ipynb") and f not in (TUTORIAL, OWN_MODEL_TUTORIAL))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_draws(name, tmp_path):
  run_and_check(name, tmp_path)


def run_and_check(name, tmp_path):
  from nbclient import NotebookClient  # pylint: disable=import-outside-toplevel
  nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code), "stored with outputs"
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
  assert images, f"{name} drew no figure"
