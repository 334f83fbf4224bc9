"""Command line: ``xnas-train --genotype FILE --config configs/<name>.py --workdir DIR``.

Retrains a genotype (the JSON that ``xnas-search`` writes) in the evaluation
network and prints its test accuracy and parameter count.  Bad input (a
missing or malformed genotype, an operation the network cannot build, a bad
config value) exits with status 2 and one line naming it; a run that diverges
exits with status 1 and keeps its last checkpoint.
"""
from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from xnas_jax import checkpointing
from xnas_jax import cli
from xnas_jax import distributed
from xnas_jax import input_pipeline
from xnas_jax import interrupts
from xnas_jax import published
from xnas_jax import retrain

_CONFIG = config_flags.DEFINE_config_file("config", None, "Retraining configuration file.",
                                          lock_config=True)
_GENOTYPE = flags.DEFINE_string(
    "genotype", None, "Genotype JSON (as written by xnas-search), or a published cell by name "
    "(xnas_jax.published: " + ", ".join(published.GENOTYPES) + ").")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar.")
_PROCESSES = cli.process_flags()


def _fail(message: str, status: int = 2) -> None:
  cli.fail("xnas-train", message, status)


def run(argv: list[str] | None = None) -> None:
  cli.parse_flags("xnas-train", sys.argv if argv is None else argv)
  config = cli.load_config("xnas-train", _CONFIG, flags.FLAGS["config"].serialize().split("=", 1)[-1])
  if not _GENOTYPE.value:
    _fail("--genotype is required")
  workdir = cli.check_workdir("xnas-train", _WORKDIR.value)
  try:
    genotype = published.load(_GENOTYPE.value)
  except OSError as e:
    _fail(f"cannot read genotype {_GENOTYPE.value!r}: {e.strerror}")
  except ValueError as e:
    message = str(e).splitlines()[0]
    _fail(message if _GENOTYPE.value in message else f"{_GENOTYPE.value}: {message}")
  cli.enable_compilation_cache()
  _PROCESSES.start("xnas-train", workdir)
  try:
    with cli.peer_lost_ends("xnas-train"):
      result = retrain.train_and_evaluate(config, genotype, workdir, progress=_PROGRESS.value)
  except (retrain.ConfigError, ValueError) as e:
    _fail(str(e).splitlines()[0])
  except input_pipeline.DataNotPreparedError as e:
    _fail(str(e))
  except checkpointing.CheckpointWriteFailed as e:  # a full disk: the checkpoints before it stay
    _fail(str(e))
  except interrupts.Stopped as e:  # SIGTERM or SIGINT: one line, the shell's status for it
    print(f"xnas-train: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)
  except retrain.TrainingDiverged as e:
    _fail(str(e), status=1)
  if not distributed.is_primary():
    return
  s = result["summary"]
  print(f"test accuracy: {s['test_acc']:.4f}")
  print(f"parameters: {s['params_m']:.3f} M (without the auxiliary head)")


if __name__ == "__main__":
  run()
