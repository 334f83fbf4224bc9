"""The DARTS-space searches give, bit for bit, what they gave before the
search spaces became data (``tests/reference/space_reference.json``, written
by ``tests/reference/write_space_reference.py`` on the code before that
change): every metric of every epoch, the genotype and the supernet's test
accuracy, for XNAS with a wipeout rebuild, DARTS with PC-DARTS's partial
channels and edge normalization, and a fixed-edge search with perturbation
selection.

XLA's CPU code differs between processor families (the vector instructions
it emits), and so do the last bits of a float sum.  Where the reference
records the processor that wrote it and this is the same one, every value
must be equal; elsewhere the floats must agree to 1e-5 relative and
everything else (the genotype, the counts, the keys) exactly."""
import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "reference"))
import write_space_reference  # noqa: E402  pylint: disable=wrong-import-position

with open(os.path.join(os.path.dirname(__file__), "reference", "space_reference.json")) as f:
  REFERENCE = json.load(f)


def _close(got, want) -> bool:
  """Equal, with floats (anywhere in nested lists and dicts) to 1e-5 relative."""
  if isinstance(want, float) and isinstance(got, (int, float)):
    return math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-7)
  if isinstance(want, dict) and isinstance(got, dict):
    return got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
  if isinstance(want, list) and isinstance(got, list):
    return len(got) == len(want) and all(map(_close, got, want))
  return got == want


@pytest.mark.parametrize("name", sorted(k for k in REFERENCE if k != "cpu"))
def test_same_search_as_before(name):
  got = write_space_reference.run(write_space_reference.reference_configs()[name])
  want = REFERENCE[name]
  same_cpu = REFERENCE.get("cpu") == write_space_reference.cpu()
  assert got["genotype"] == want["genotype"]
  assert len(got["metrics"]) == len(want["metrics"])
  for line_got, line_want in zip(got["metrics"], want["metrics"]):
    if same_cpu:
      assert line_got == line_want  # exact: the same floats, the same keys
    else:
      assert _close(line_got, line_want), (line_got, line_want)
  assert got["supernet_test_acc"] == want["supernet_test_acc"]
