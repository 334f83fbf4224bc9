"""The DARTS-space searches give, bit for bit, what they gave before the
search spaces became data (``tests/reference/space_reference.json``, written
by ``tests/reference/write_space_reference.py`` on the code before that
change): every metric of every epoch, the genotype and the supernet's test
accuracy, for XNAS with a wipeout rebuild, DARTS with PC-DARTS's partial
channels and edge normalization, and a fixed-edge search with perturbation
selection."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "reference"))
import write_space_reference  # noqa: E402  pylint: disable=wrong-import-position

with open(os.path.join(os.path.dirname(__file__), "reference", "space_reference.json")) as f:
  REFERENCE = json.load(f)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_same_search_as_before(name):
  got = write_space_reference.run(write_space_reference.reference_configs()[name])
  want = REFERENCE[name]
  assert got["genotype"] == want["genotype"]
  assert len(got["metrics"]) == len(want["metrics"])
  for line_got, line_want in zip(got["metrics"], want["metrics"]):
    assert line_got == line_want  # exact: the same floats, the same keys
  assert got["supernet_test_acc"] == want["supernet_test_acc"]
