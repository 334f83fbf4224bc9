"""Command line: ``xnas-draw GENOTYPE`` and ``xnas-draw --report WORKDIR``.

``xnas-draw genotype.json`` draws the normal and reduction cells of a genotype
file (or of a published cell by name: ``xnas-draw darts_v2``) into
``genotype.png`` beside it (``--out`` for other files; the format from the
suffix: .png, .svg, .pdf).  ``xnas-draw --report WORKDIR`` draws a search's
report (``WORKDIR/report.png``, or ``report_seed<s>.png`` with ``--seed``)
from its ``metrics.jsonl``.  Bad input exits 2 with one line.
"""
from __future__ import annotations

import argparse
import os
import sys

import ml_collections

from xnas_jax import checkpointing
from xnas_jax import cli
from xnas_jax import figures
from xnas_jax import published
from xnas_jax import spaces


def _draw_genotype(spec: str, outs: list[str]) -> list[str]:
  try:
    genotype = published.load(spec)
  except OSError as e:
    cli.fail("xnas-draw", f"cannot read genotype {spec!r}: {e.strerror}")
  except ValueError as e:
    message = str(e).splitlines()[0]
    cli.fail("xnas-draw", message if spec in message else f"{spec}: {message}")
  arch_string = spec.strip().startswith("|")  # a NAS-Bench-201 arch string
  if not outs:
    base = (os.path.join(".", "genotype") if arch_string
            else spec if os.path.exists(spec) else os.path.join(".", spec))
    outs = [os.path.splitext(base)[0] + ".png"]
  title = "" if os.path.exists(spec) or arch_string else f"{spec}:"
  return figures.draw_genotype(genotype, outs, title)


def _draw_report(workdir: str, seed: int | None, genotype_spec: str | None) -> list[str]:
  config = checkpointing.recorded_config(workdir)
  if "op_set" not in config:
    cli.fail("xnas-draw", f"{workdir} is not a search workdir (no config.json of a search)")
  space = spaces.get(config.get("space", "darts")).make_space(ml_collections.ConfigDict(config))
  suffix = "" if seed is None else f"_seed{seed}"
  spec = genotype_spec or os.path.join(workdir, f"genotype{suffix}.json")
  genotype = published.load(spec) if os.path.exists(spec) or spec in published.GENOTYPES else None
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    cli.fail("xnas-draw", f"{workdir} has no metrics.jsonl")
  out = figures.report_from_workdir(workdir, space, seed, suffix, genotype)
  if not out:
    cli.fail("xnas-draw", f"{workdir}/metrics.jsonl has no lines with mixture weights")
  return out


def run(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(prog="xnas-draw", description=__doc__.splitlines()[0])
  ap.add_argument("genotype", nargs="?", help="genotype JSON file or published name")
  ap.add_argument("--out", nargs="+", default=[], help="output files (.png, .svg, .pdf)")
  ap.add_argument("--report", metavar="WORKDIR", help="draw this search workdir's report")
  ap.add_argument("--seed", type=int, default=None, help="the seed of a several-seed search")
  args = ap.parse_args(sys.argv[1:] if argv is None else argv)
  if args.report:
    written = _draw_report(args.report, args.seed, args.genotype)
  elif args.genotype:
    written = _draw_genotype(args.genotype, args.out)
  else:
    ap.error("give a GENOTYPE (file or published name) or --report WORKDIR")
  print("\n".join(written))


if __name__ == "__main__":
  run()
