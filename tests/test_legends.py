"""shared.legends: a legend placed over data is detected (lines, segments between vertices, scatter,
bars, twin axes, figure legends) and moved off it; one placed in empty space, or over an axhline, is not."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from shared.legends import legend_overlaps, place_legends  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _line_fig():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 10], [0, 10], label="diagonal")  # two vertices: only the segment crosses the middle
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    return fig, ax


def test_legend_over_a_segment_is_found_and_moved():
    fig, ax = _line_fig()
    ax.legend(loc="center")
    problems = legend_overlaps(fig)
    assert problems == ["legend of axes '' covers line 'diagonal'"]
    assert place_legends(fig) == 1
    assert legend_overlaps(fig) == []
    assert ax.get_legend().get_window_extent().x0 > ax.get_window_extent().x1  # now right of the axes


def test_legend_in_empty_space_or_over_a_reference_line_is_left_alone():
    fig, ax = _line_fig()
    ax.axhline(8.5, color="k")  # a reference line in axes coordinates through the legend
    ax.legend(loc="upper left")
    assert legend_overlaps(fig) == []
    before = ax.get_legend().get_window_extent().bounds
    assert place_legends(fig) == 0
    assert ax.get_legend().get_window_extent().bounds == before


def test_scatter_bars_and_twin_axes():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar([0, 1, 2], [1, 1, 1], label="bars")
    ax.legend(loc="center")
    [problem] = legend_overlaps(fig)
    assert problem.startswith("legend of axes '' covers ") and problem.endswith(" bar(s)")
    assert place_legends(fig) == 1
    assert legend_overlaps(fig) == []

    fig2, ax2 = plt.subplots(figsize=(4, 3))
    ax2.set_xlim(0, 10)
    ax2.set_ylim(0, 10)
    ax2.plot([1], [1], "o", label="corner")
    twin = ax2.twinx()
    twin.set_ylim(0, 10)
    twin.scatter([5], [5], label="centre")
    fig2.legend(loc="center")
    [problem] = legend_overlaps(fig2)
    assert problem == "figure legend covers scatter points"
    assert place_legends(fig2) == 1
    assert legend_overlaps(fig2) == []


def test_a_panel_with_a_neighbour_on_the_right_gets_its_legend_below():
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    for ax in (left, right):
        ax.plot([0, 10], [0, 10], label="diagonal")
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 10)
    left.legend(loc="center")
    right.legend(loc="center")
    assert place_legends(fig) == 2
    assert legend_overlaps(fig) == []
    renderer = fig.canvas.get_renderer()
    moved_left = left.get_legend().get_window_extent(renderer)
    assert moved_left.y1 < left.xaxis.get_tightbbox(renderer).y0 + 1  # under the left panel's x label ...
    assert not moved_left.overlaps(right.get_window_extent(renderer))  # ... not over the right panel
    assert right.get_legend().get_window_extent(renderer).x0 > right.get_window_extent(renderer).x1
