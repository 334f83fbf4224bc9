"""Command line: ``xnas-search --config configs/<name>.py --workdir DIR``.

Bad input (an unknown op set or data set, a non-positive rate or batch size,
a batch larger than the data, an unknown config key) exits with status 2 and
one line naming the bad value.
"""
from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from xnas_jax import checkpointing
from xnas_jax import cli
from xnas_jax import distributed
from xnas_jax import input_pipeline
from xnas_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Search configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, genotype.")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar.")
_PROCESSES = cli.process_flags()


def _fail(message: str, status: int = 2) -> None:
  cli.fail("xnas-search", message, status)


def run(argv: list[str] | None = None) -> None:
  cli.parse_flags("xnas-search", sys.argv if argv is None else argv)
  config = cli.load_config("xnas-search", _CONFIG, flags.FLAGS["config"].serialize().split("=", 1)[-1])
  workdir = cli.check_workdir("xnas-search", _WORKDIR.value)
  cli.enable_compilation_cache()
  _PROCESSES.start("xnas-search", workdir)
  try:
    with cli.peer_lost_ends("xnas-search"):
      result = train.train_and_evaluate(config, workdir, progress=_PROGRESS.value)
  except (train.ConfigError, ValueError) as e:
    _fail(str(e).splitlines()[0])
  except input_pipeline.DataNotPreparedError as e:
    _fail(str(e), status=2)
  except checkpointing.CheckpointWriteFailed as e:  # a full disk: the checkpoints before it stay
    _fail(str(e), status=2)
  except train.Interrupted as e:  # SIGTERM or SIGINT: one line, the shell's status for it
    print(f"xnas-search: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)
  except train.SearchDiverged as e:
    _fail(f"{e}; the last good checkpoint is in {os.path.join(_WORKDIR.value, 'checkpoints')}",
          status=1)
  if not distributed.is_primary():
    return
  s = result["summary"]
  for note in s.get("selection_notes", []):
    print(f"selection: {note}")
  print(f"supernet test accuracy: {s['supernet_test_acc']:.4f}")
  print("genotype:")
  print(result["genotype"].to_json())


if __name__ == "__main__":
  run()
