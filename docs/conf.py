"""Sphinx configuration of the xnas-jax documentation.

  pip install -e ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html

Pages are Markdown (MyST); the API reference comes from the docstrings
(autodoc + napoleon, Google style); the notebooks of ``notebooks/`` are copied
into ``_notebooks`` and rendered by myst-nb without being executed (the test
suite executes them).
"""
import glob
import os
import shutil
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

project = "xnas-jax"
author = "the xnas-jax authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx.ext.viewcode"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "*.json", "README.md"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
nb_execution_mode = "off"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_mock_imports = ["torch"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, not a second description of each field
suppress_warnings = ["myst.xref_missing", "mystnb.unknown_mime_type"]
html_theme = "alabaster"
html_static_path = []

# The notebooks live in notebooks/ (the test suite runs them there); Sphinx
# reads them from a copy inside the source tree.
_NB = os.path.join(os.path.dirname(__file__), "_notebooks")
os.makedirs(_NB, exist_ok=True)
for _path in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")):
  shutil.copy(_path, _NB)

# The two CLIs define absl flags of the same names at import (as flax's
# examples do), so one process cannot import both: after the search CLI is
# imported, its flags are removed before autodoc imports the retraining CLI.
from absl import flags as _flags  # noqa: E402  pylint: disable=wrong-import-position
import xnas_jax.main  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
for _name in ("config", "workdir", "progress"):
  if _name in _flags.FLAGS:
    delattr(_flags.FLAGS, _name)
