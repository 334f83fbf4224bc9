"""The documentation site lists every public module in its API reference,
and nothing in the repository points outside it."""
import os
import re
import subprocess

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _public_modules():
  out = set()
  for dirpath, _, files in os.walk(os.path.join(ROOT, "xnas_jax")):
    rel = os.path.relpath(dirpath, ROOT).replace(os.sep, ".")
    for f in files:
      if f == "__init__.py" and rel != "xnas_jax":
        out.add(rel)
      elif f.endswith(".py") and not f.startswith("_"):
        out.add(f"{rel}.{f[:-3]}")
  return out


def test_every_public_module_is_in_the_api_reference():
  with open(os.path.join(ROOT, "docs", "api.md")) as f:
    documented = set(re.findall(r"\.\. automodule:: (\S+)", f.read()))
  assert _public_modules() - documented == set()


def test_nothing_refers_to_files_outside_the_repository():
  proc = subprocess.run(["git", "grep", "-n", "shared/", "--", "xnas_jax", "docs", "README.md",
                         "tests", "benchmarks", "experiments", "configs", "notebooks",
                         ":!tests/test_docs.py"], cwd=ROOT, capture_output=True, text=True)
  assert proc.stdout == ""
