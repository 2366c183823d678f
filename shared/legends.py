"""Legends that do not hide data: find the ones that do, and move them outside the axes.

matplotlib and seaborn place a legend at the "best" spot inside the axes, which on a crowded panel still
covers lines, markers or bars (a review of every figure found four such panels). :func:`legend_overlaps`
measures it after drawing: which plotted points (line vertices and points along each segment, scatter
points, bars) fall inside a legend's box, in display coordinates, across every axes of the figure (a
twin-axes legend can cover the other axes' lines). Reference lines drawn in axes coordinates
(``axhline``/``axvline``) do not count. :func:`place_legends` moves each offending legend to the right of
its axes (below it when another panel sits to the right; right of the figure for a figure legend); call it just before ``shared.plotting.savefig``, whose
tight bounding box then includes the moved legend.
"""

from __future__ import annotations

import numpy as np

__all__ = ["legend_overlaps", "place_legends"]

_SAMPLES_PER_SEGMENT = 8


def _data_points(fig) -> list[tuple[str, np.ndarray]]:
    """(label, (N, 2) display coordinates) of what every axes of ``fig`` plots in data coordinates."""
    from matplotlib.collections import PathCollection

    out = []
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_transform() != ax.transData or not line.get_visible():
                continue  # axhline/axvline and friends: reference lines in axes coordinates
            xy = np.asarray(line.get_xydata(), dtype=float)
            xy = xy[np.isfinite(xy).all(axis=1)]
            if len(xy) == 0:
                continue
            pts = ax.transData.transform(xy)
            if len(pts) > 1 and line.get_linestyle() not in ("None", "none", " ", ""):
                t = np.linspace(0.0, 1.0, _SAMPLES_PER_SEGMENT, endpoint=False)[1:, None, None]
                between = pts[:-1][None] + t * (pts[1:] - pts[:-1])[None]
                pts = np.concatenate([pts, between.reshape(-1, 2)])
            out.append((f"line {line.get_label()!r}", pts))
        for coll in ax.collections:
            if isinstance(coll, PathCollection) and coll.get_visible():
                offsets = np.asarray(coll.get_offsets(), dtype=float)
                offsets = offsets[np.isfinite(offsets).all(axis=1)] if offsets.size else offsets
                if len(offsets):
                    out.append(("scatter points", coll.get_offset_transform().transform(offsets)))
    return out


def _bars(fig):
    from matplotlib.patches import Rectangle

    for ax in fig.axes:
        for patch in ax.patches:
            if isinstance(patch, Rectangle) and patch.get_visible() and patch.get_height() and patch.get_width():
                yield patch


def _legends(fig):
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            yield ax, legend
    for legend in fig.legends:
        if legend.get_visible():
            yield None, legend


def _covering(fig) -> list[tuple[object, object, list[str]]]:
    """(axes or None, legend, what it covers) for every legend of ``fig`` that covers plotted data."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    points = _data_points(fig)
    bars = list(_bars(fig))
    found = []
    for ax, legend in _legends(fig):
        box = legend.get_window_extent(renderer).padded(-1.0)  # touching the frame is not covering
        covered = [label for label, pts in points
                   if ((pts[:, 0] > box.x0) & (pts[:, 0] < box.x1)
                       & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)).any()]
        n_bars = sum(box.overlaps(p.get_window_extent(renderer)) for p in bars)
        if n_bars:
            covered.append(f"{n_bars} bar(s)")
        if covered:
            found.append((ax, legend, sorted(set(covered))))
    return found


def legend_overlaps(fig) -> list[str]:
    """One line per legend of ``fig`` that covers plotted data, naming what it covers (empty: none does)."""
    return [(f"legend of axes {ax.get_title()!r}" if ax is not None else "figure legend")
            + f" covers {', '.join(covered)}" for ax, _legend, covered in _covering(fig)]


def _same_spot(a, b) -> bool:
    return a is b or a.get_position().bounds == b.get_position().bounds  # twin axes share the spot


def _neighbour(fig, ax, side: str) -> bool:
    """Whether another axes (not a twin of ``ax``) sits to the right of / below ``ax``."""
    box = ax.get_position()
    for other in fig.axes:
        if _same_spot(other, ax):
            continue
        o = other.get_position()
        if side == "right" and o.x0 >= box.x1 - 1e-9 and o.y0 < box.y1 and o.y1 > box.y0:
            return True
        if side == "below" and o.y1 <= box.y0 + 1e-9 and o.x0 < box.x1 and o.x1 > box.x0:
            return True
    return False


def _outer_edge(fig, ax, side: str) -> float:
    """In ``ax``'s axes coordinates: the right edge (``side="right"``) or the bottom edge (``"below"``) of
    everything drawn for ``ax`` and its twins (tick labels, axis labels)."""
    renderer = fig.canvas.get_renderer()
    boxes = []
    for other in fig.axes:
        if _same_spot(other, ax):  # the axes frame and its axis labels; not its (current) legend
            boxes += [other.get_window_extent(renderer), other.xaxis.get_tightbbox(renderer),
                      other.yaxis.get_tightbbox(renderer)]
    boxes = [b for b in boxes if b is not None]
    to_axes = ax.transAxes.inverted()
    if side == "right":
        return max(to_axes.transform((b.x1, b.y0))[0] for b in boxes)
    return min(to_axes.transform((b.x0, b.y0))[1] for b in boxes)


def place_legends(fig) -> int:
    """Move every legend of ``fig`` that covers data outside: an axes legend to the right of the axes and
    its twins' labels, or below them when another panel sits to the right (and none below); a figure
    legend to the right of the figure. Returns how many were moved."""
    import seaborn as sns

    found = _covering(fig)
    for ax, legend, _covered in found:
        if ax is None:
            legend.set_loc("center left")
            legend.set_bbox_to_anchor((1.0, 0.5), transform=fig.transFigure)
        elif _neighbour(fig, ax, "right") and not _neighbour(fig, ax, "below"):
            n = len(legend.get_texts())
            sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, _outer_edge(fig, ax, "below") - 0.02),
                            ncol=min(n, 4), borderaxespad=0.0)
        else:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(_outer_edge(fig, ax, "right") + 0.02, 1.0),
                            borderaxespad=0.0)
    if found:
        fig.canvas.draw()
    return len(found)
