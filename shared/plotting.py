"""One plot theme for every paper, and PNG saving that gives the same bytes for the same figure."""

from __future__ import annotations

from pathlib import Path

PALETTE = "colorblind"


def set_theme() -> None:
    """The house style: seaborn "whitegrid", colour-blind palette, readable sizes, Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette=PALETTE)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "savefig.bbox": "tight",
                                "axes.titlesize": "medium"})


def savefig(fig, path: str | Path) -> Path:
    """Save ``fig`` as PNG without metadata (no software/version stamp), so identical figures give
    identical files and git/DVC see no change on a rerun."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
