"""Pictures: the cells of a genotype and the report of a search."""
import itertools

import numpy as np
import pytest
from matplotlib import colors

from xnas_jax import figures
from xnas_jax import published
from xnas_jax.search_space import get_search_space


def _label_boxes(fig):
  """Window extents of the op labels (texts with a frame in the op's colour)."""
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  boxes = []
  for ax in fig.axes:
    for text in ax.texts:
      if text.get_text() in figures.OP_COLORS:
        boxes.append((text.get_text(), text.get_bbox_patch().get_window_extent(renderer)))
  return boxes


@pytest.mark.parametrize("name", sorted(published.GENOTYPES))
def test_every_kept_edge_is_labelled_and_no_labels_overlap(name):
  genotype = published.get(name)
  fig = figures.genotype_figure(genotype, name)
  boxes = _label_boxes(fig)
  assert sorted(op for op, _ in boxes) == sorted(op for op, _ in genotype.normal + genotype.reduce)
  for (_, a), (_, b) in itertools.combinations(boxes, 2):
    assert not a.overlaps(b)


def test_png_shows_the_colours_of_the_ops_it_uses(tmp_path):
  genotype = published.get("darts_v2")  # sep_conv_3x3, skip, dil_conv_3x3, max_pool
  path = str(tmp_path / "g.png")
  figures.draw_genotype(genotype, [path])
  from matplotlib import image  # pylint: disable=import-outside-toplevel
  pixels = image.imread(path)[..., :3].reshape(-1, 3)
  used = {op for op, _ in genotype.normal + genotype.reduce}

  def count(op):
    rgb = np.asarray(colors.to_rgb(figures.OP_COLORS[op]))
    return int((np.abs(pixels - rgb).max(-1) < 0.02).sum())

  for op in used:
    assert count(op) > 50, op
  for op in set(figures.OP_COLORS) - used - {"none"}:
    assert count(op) < 5, op


def _lines(space, epochs=3):
  """Metrics lines whose mixture moves towards op 4 on every edge."""
  e, n = space.num_edges, space.num_ops
  out = []
  for k in range(1, epochs + 1):
    u = np.full((e, n), 1.0 / n)
    u[:, 4] += 0.2 * k
    u /= u.sum(-1, keepdims=True)
    out.append({"epoch": k, "mixture_normal": u.tolist(), "mixture_reduce": u.tolist(),
                "active_normal": e * n - k, "active_reduce": e * n,
                "entropy_normal": 1.0 - 0.1 * k, "entropy_reduce": 1.0})
  return out


def test_the_report_draws_every_edge_and_frames_the_kept_ones():
  space = get_search_space("xnas", "darts")
  genotype = published.get("xnas")
  fig = figures.report_figure(_lines(space), space, "t", genotype)
  # 14 edges per cell type, plus the live-experts and the entropy panels.
  assert len(fig.axes) == 2 * space.num_edges + 2
  edge_axes = fig.axes[:space.num_edges]  # the normal cell's, in space.edges order
  framed = {}
  for (src, dst), ax in zip(space.edges, edge_axes):
    assert len(ax.lines) == space.num_ops
    n = space.num_ops
    np.testing.assert_allclose(ax.lines[4].get_ydata(),
                               [(1 / n + 0.2 * k) / (1 + 0.2 * k) for k in (1, 2, 3)])
    if ax.spines["top"].get_linewidth() > 2:
      framed[(src, dst)] = colors.to_hex(ax.spines["top"].get_edgecolor())
  kept = {(src, k // 2 + 2): figures.OP_COLORS[op] for k, (op, src) in enumerate(genotype.normal)}
  assert framed == kept


def test_a_report_needs_metrics_lines():
  space = get_search_space("xnas", "darts")
  with pytest.raises(ValueError, match="no metrics lines"):
    figures.report_figure([], space)
