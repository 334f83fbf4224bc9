"""Pictures of a search: the found cells, and a report of the search's course.

``draw_cells`` draws a genotype's cells the way the DARTS and XNAS papers
draw them (DARTS Fig. 4-5, XNAS Fig. 2): the cell inputs (``c_{k-2}``,
``c_{k-1}`` in DARTS) on the left, the intermediate nodes laid out by depth,
each kept edge an arrow labelled with its operation (``none`` edges are not
drawn), and the nodes that form the output ``c_{k}``.  Each space family
(``xnas_jax.spaces``) says which cells a genotype has; ``draw_genotype``
draws any family's genotype.  ``search_report`` draws,
from ``metrics.jsonl``, the mixture weights of every edge over the epochs
(one small plot per edge, placed as the edge sits in the cell: rows are the
destination nodes, columns the sources) and, per cell type, the live experts
and the normalized entropy over the epochs (XNAS's wipeouts are the steps
down in the live experts and the weights dropping to zero).

Drawn with matplotlib's object API (``Figure`` and the Agg canvas), so no
display, no pyplot state and no system package such as graphviz is needed.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib import patches
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xnas_jax.search_space import SearchSpace

Genotype = Any  # a genotype of any space family (xnas_jax.spaces)
NodeEdges = Sequence[Sequence[tuple[str, int]]]  # per node, its (op, src) edges

# One colour per operation name, the same in every picture.
OP_COLORS = {
    "none": "#9e9e9e", "max_pool_3x3": "#1f77b4", "avg_pool_3x3": "#17becf",
    "skip_connect": "#2ca02c", "sep_conv_3x3": "#d62728", "sep_conv_5x5": "#ff7f0e",
    "dil_conv_3x3": "#9467bd", "dil_conv_5x5": "#8c564b", "noise": "#e377c2",
    "nor_conv_1x1": "#bcbd22", "nor_conv_3x3": "#393b79",
}
_OTHER = "#444444"
# Operations of no named colour (a user's model's candidates): by index.
_BY_INDEX = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
             "#7f7f7f", "#bcbd22", "#17becf")


def op_color(op: str, index: int) -> str:
  """The colour of operation ``op``, the ``index``-th of its space."""
  return OP_COLORS.get(op, _BY_INDEX[index % len(_BY_INDEX)])
_DX, _DY = 4.8, 2.2  # spacing of the depth levels, and of the states within a level


def _save(fig: Figure, paths: Sequence[str]) -> list[str]:
  FigureCanvasAgg(fig)
  with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text
    for path in paths:
      fig.savefig(path, dpi=130, bbox_inches="tight")
  return list(paths)


def _drawn(node: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
  """A node's edges that carry something (``none`` sends zeros)."""
  return [(op, src) for op, src in node if op != "none"]


def _levels(nodes: NodeEdges, num_inputs: int) -> dict[int, int]:
  """Depth of every state: inputs 0, a node one more than its deepest source."""
  level = {i: 0 for i in range(num_inputs)}
  for k, node in enumerate(nodes):
    level[k + num_inputs] = 1 + max([level.get(src, 0) for _, src in _drawn(node)], default=0)
  return level


DARTS_INPUT_NAMES = ("$c_{k-2}$", "$c_{k-1}$")


def _state_name(state: int, input_names: Sequence[str] = DARTS_INPUT_NAMES,
                number_from: int = 0) -> str:
  n = len(input_names)
  return input_names[state] if state < n else str(state - n + number_from)


def draw_cell(ax, nodes: NodeEdges, concat: Sequence[int], title: str,
              input_names: Sequence[str] = DARTS_INPUT_NAMES, number_from: int = 0) -> None:
  """One cell on ``ax``: states as boxes, kept edges as labelled arrows.

  Args:
    nodes: per intermediate node, its ``(op, src)`` edges.
    concat: the states that form the cell's output.
    input_names: the labels of the cell's input states.
    number_from: the label of the first intermediate node.
  """
  num_inputs = len(input_names)
  name = lambda s: _state_name(s, input_names, number_from)
  level = _levels(nodes, num_inputs)
  out_level = max(level.values()) + 1
  sources = {k + num_inputs: [src for _, src in _drawn(node)] or [0]
             for k, node in enumerate(nodes)}
  widest = max(sum(l == lv for l in level.values()) for lv in range(1, out_level))
  spread = _DY * max(widest - 1, 1.6) / 2
  pos = {i: (-0.25 * _DX, spread - 2 * spread * i / max(num_inputs - 1, 1) if num_inputs > 1
             else 0.0) for i in range(num_inputs)}
  for lv in range(1, out_level):
    # Barycentre order: a node sits near its sources, which keeps arrows from crossing.
    states = sorted((s for s, l in level.items() if l == lv),
                    key=lambda s: (-np.mean([pos[x][1] for x in sources[s]]), s))
    # A level of one node sits off the middle line, alternately up and down,
    # so that a chain of nodes does not hide the edges that skip a level.
    shift = 0.4 * _DY * (-1) ** lv if len(states) == 1 else 0.0
    for i, state in enumerate(states):
      pos[state] = (_DX * lv, _DY * ((len(states) - 1) / 2.0 - i) + shift)
  pos["out"] = (_DX * out_level, 0.0)

  def box(state, label, color):
    x, y = pos[state]
    ax.text(x, y, label, ha="center", va="center", fontsize=10, zorder=3,
            bbox=dict(boxstyle="round,pad=0.35", fc=color, ec="black", lw=0.8))

  for state in level:
    box(state, name(state), "#a6cee3" if state < num_inputs else "#fff2ae")
  box("out", "$c_{k}$", "#b2df8a")

  def line(p1, p2, color, head, rad=0.0):
    ax.add_patch(patches.FancyArrowPatch(
        p1, p2, arrowstyle="-|>" if head else "-", mutation_scale=12, color=color, lw=1.4,
        shrinkA=12, shrinkB=12 if head else 0, zorder=1, connectionstyle=f"arc3,rad={rad}"))

  extent = []
  for k, node in enumerate(nodes):
    # Each kept edge is drawn as its operation's label just left of the node
    # it feeds (stacked from above to below), with a line from the source to
    # the label and an arrow from the label on: the labels cannot overlap.
    dst = k + num_inputs
    x, y = pos[dst]
    drawn = _drawn(node)
    if len(drawn) > 2:  # labels top to bottom as their sources sit, so that lines cross less
      drawn.sort(key=lambda e: -pos[e[1]][1])
    half = 0.3 * max(len(drawn) - 1, 1)  # two labels at +-0.3 (DARTS), three at +-0.6
    offsets = np.linspace(half, -half, len(drawn)) if len(drawn) > 1 else [0.3]
    for (op, src), off in zip(drawn, offsets):
      color = OP_COLORS.get(op, _OTHER)
      at = (x - 0.5 * _DX, y + off * _DY)
      # An edge that skips levels bows away from the nodes it passes (arc3's
      # rad < 0 bends a rightward line up).
      skipped = level[dst] - level[src] - 1
      rad = 0.07 * skipped * (-1 if pos[src][1] >= at[1] else 1)
      line(pos[src], at, color, head=False, rad=rad)
      bulge = -rad * (at[0] - pos[src][0]) / 2  # the curve's height over the chord's middle
      extent.append((pos[src][1] + at[1]) / 2 + bulge)
      line(at, (x, y), color, head=True)
      ax.text(*at, op, ha="center", va="center", fontsize=7, color=color, zorder=2,
              bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=color, lw=0.8))
  for state in concat:
    line(pos[state], pos["out"], "#777777", head=True)
  xs = [p[0] for p in pos.values()]
  ys = [p[1] for p in pos.values()] + extent
  ax.set_xlim(min(xs) - 1.0, max(xs) + 1.0)
  ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
  ax.set_aspect("equal")
  ax.axis("off")
  ax.set_title(title, fontsize=11)


def cells_figure(cells: Sequence[tuple[str, NodeEdges, Sequence[int]]],
                 input_names: Sequence[str] = DARTS_INPUT_NAMES, title: str = "",
                 number_from: int = 0) -> Figure:
  """Cells side by side (at most 4 a row): each ``(name, nodes, concat)``."""
  cols = min(len(cells), 4)
  rows = -(-len(cells) // cols)
  fig = Figure(figsize=(7.5 * cols, 5.0 * rows))
  FigureCanvasAgg(fig)
  for i, (name, nodes, concat) in enumerate(cells):
    ax = fig.add_subplot(rows, cols, i + 1)
    draw_cell(ax, nodes, concat, f"{title} {name}".strip(), input_names, number_from)
  return fig


def draw_cells(cells: Sequence[tuple[str, NodeEdges, Sequence[int]]], paths: Sequence[str],
               input_names: Sequence[str] = DARTS_INPUT_NAMES, title: str = "") -> list[str]:
  """Draws ``cells_figure`` into each of ``paths`` (the format from the
  suffix: ``.png``, ``.svg``, ``.pdf``)."""
  return _save(cells_figure(cells, input_names, title), paths)


def genotype_figure(genotype: Genotype, title: str = "") -> Figure:
  """The cells of ``genotype`` (any space family), side by side."""
  from xnas_jax import spaces  # pylint: disable=import-outside-toplevel
  fam = spaces.family_of_genotype(genotype)
  if hasattr(fam, "genotype_figure"):  # a family whose genotype is not cells (a user's model)
    return fam.genotype_figure(genotype, title)
  return cells_figure(fam.cells_to_draw(genotype), fam.INPUT_NAMES, title,
                      fam.NODE_NUMBERS_FROM)


def draw_genotype(genotype: Genotype, paths: Sequence[str], title: str = "") -> list[str]:
  """Draws ``genotype_figure`` into each of ``paths`` (the format from the
  suffix: ``.png``, ``.svg``, ``.pdf``)."""
  return _save(genotype_figure(genotype, title), paths)


def read_metrics(path: str, seed: int | None = None) -> list[dict[str, Any]]:
  """The per-epoch lines of ``metrics.jsonl`` (one seed's: the first seed by default)."""
  with open(path) as f:
    lines = [json.loads(l) for l in f if l.strip()]
  if seed is None and lines:
    seed = lines[0].get("seed")
  return [l for l in lines if l.get("seed") == seed]


def search_report(lines: Sequence[dict[str, Any]], space: SearchSpace, paths: Sequence[str],
                  title: str = "", genotype: Genotype | None = None) -> list[str]:
  """Draws ``report_figure`` into each of ``paths``."""
  return _save(report_figure(lines, space, title, genotype), paths)


def _kept(genotype: Genotype | None, cell_type: str) -> dict[tuple[int, int], str]:
  """``(src, dst) -> op`` of the edges ``genotype`` keeps in a cell type."""
  if genotype is None:
    return {}
  return dict(genotype.kept_edges(cell_type))


def report_figure(lines: Sequence[dict[str, Any]], space: SearchSpace, title: str = "",
                  genotype: Genotype | None = None) -> Figure:
  """The search's course from its metrics lines (each with ``mixture_<type>``,
  ``active_<type>`` and ``entropy_<type>``): see the module docstring.  The
  edges ``genotype`` keeps are framed in their operation's colour."""
  if not lines:
    raise ValueError("no metrics lines to draw")
  ops, edges, n_in = space.ops, space.edges, space.num_inputs
  every_type = space.cell_types
  types = every_type[:4]  # an architecture per cell: the first four cells' mixtures
  from xnas_jax import spaces  # pylint: disable=import-outside-toplevel
  fam = spaces.family(space)
  names = lambda s: _state_name(s, fam.INPUT_NAMES, fam.NODE_NUMBERS_FROM)
  epochs = [l["epoch"] for l in lines]
  num_src = max(s for s, _ in edges) + 1
  num_dst = max(d for _, d in edges) - n_in + 1
  cols = max(len(types), 2)
  fig = Figure(figsize=(8 * cols, 9.5))
  outer = fig.add_gridspec(2, cols, height_ratios=[3.2, 1.0], hspace=0.25, wspace=0.08)
  for c, t in enumerate(types):
    mix = np.asarray([l[f"mixture_{t}"] for l in lines])  # [epochs, E, N]
    top = outer[0, :] if len(types) == 1 else outer[0, c]  # one cell type: the full width
    grid = top.subgridspec(num_dst, num_src, hspace=0.15, wspace=0.1)
    kept = _kept(genotype, t)
    for e, (src, dst) in enumerate(edges):
      ax = fig.add_subplot(grid[dst - n_in, src])
      for i, op in enumerate(ops):
        ax.plot(epochs, mix[:, e, i], color=op_color(op, i), lw=1.2)
      ax.set_ylim(-0.02, 1.02)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.text(0.03, 0.95, f"{names(src)}->{names(dst)}", transform=ax.transAxes,
              fontsize=6, va="top")
      if (src, dst) in kept:
        for side in ax.spines.values():
          side.set_edgecolor(op_color(kept[(src, dst)], list(ops).index(kept[(src, dst)])))
          side.set_linewidth(2.5)
    label = t if t.startswith("cell") or t.endswith("cell") else f"{t} cell"
    fig.text((c + 0.5) / len(types), 0.93, f"{label}: mixture weights u per edge over epochs "
             f"{epochs[0]}-{epochs[-1]}" + (" (framed: kept)" if kept and len(types) < 3 else ""),
             ha="center", fontsize=10)
  handles = [patches.Patch(color=op_color(op, i), label=op) for i, op in enumerate(ops)]
  fig.legend(handles=handles, loc="upper center", ncol=len(ops), fontsize=8, frameon=False,
             bbox_to_anchor=(0.5, 0.975))
  for c, (key, label) in enumerate((("active", "live experts"), ("entropy", "normalized entropy"))):
    ax = fig.add_subplot(outer[1, c])
    for t, style in zip(every_type, ("-", "--", "-.", ":") * len(every_type)):
      ax.plot(epochs, [l[f"{key}_{t}"] for l in lines], style, marker="o", ms=3, label=t)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylabel(label)
    ax.legend(fontsize=8, ncol=max(len(every_type) // 8, 1))
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title, y=1.0)
  return fig


def report_from_workdir(workdir: str, space: SearchSpace, seed: int | None = None,
                        suffix: str = "", genotype: Genotype | None = None) -> list[str]:
  """``workdir/report<suffix>.png`` from ``workdir/metrics.jsonl`` (nothing
  when its lines have no mixture weights: a workdir of an older version)."""
  lines = [l for l in read_metrics(os.path.join(workdir, "metrics.jsonl"), seed)
           if all(f"mixture_{t}" in l for t in space.cell_types)]
  if not lines:
    return []
  title = f"seed {lines[0].get('seed')}" if lines[0].get("seed") is not None else ""
  return search_report(lines, space, [os.path.join(workdir, f"report{suffix}.png")], title,
                       genotype)
