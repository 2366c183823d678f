"""Where things live in the repository.

The repository root is the directory that holds ``dvc.yaml``, ``params.yaml`` and ``papers/``. It is found
from the ``REPLICATIONS_ROOT`` environment variable when set (the runner sets it for the notebook kernel),
else by walking up from the current directory (so commands act on the checkout they are run in, even with
an environment installed from another checkout), else by walking up from this file.
"""

from __future__ import annotations

import os
from pathlib import Path

MARKERS = ("dvc.yaml", "params.yaml")


def _is_root(path: Path) -> bool:
    return all((path / m).exists() for m in MARKERS) and (path / "papers").is_dir()


def repo_root() -> Path:
    env = os.environ.get("REPLICATIONS_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for candidate in (start, *start.parents):
            if _is_root(candidate):
                return candidate
    raise FileNotFoundError(
        "cannot find the repository root (a directory with dvc.yaml, params.yaml and papers/); "
        "run from inside the repository or set REPLICATIONS_ROOT"
    )


def paper_dir(slug: str) -> Path:
    return repo_root() / "papers" / slug


def notebook_path(slug: str) -> Path:
    """The committed notebook source: a jupytext percent-format file ``<slug>.nb.py``.

    The ``.nb.py`` suffix keeps it from shadowing the paper's importable modules.
    """
    return paper_dir(slug) / f"{slug}.nb.py"


def results_dir(slug: str) -> Path:
    return repo_root() / "results" / slug


def data_dir() -> Path:
    return repo_root() / "data"


def scratch_dir(slug: str) -> Path:
    """Where a notebook writes when explored interactively (git- and DVC-ignored)."""
    return repo_root() / "scratch" / slug


def resolve_output_dir(output_dir: str, slug: str) -> Path:
    """The notebook's ``output_dir`` parameter: the runner passes a temporary directory; an empty
    string (the notebook's default, used in JupyterLab) means ``scratch/<slug>`` so that exploring a
    notebook never touches the pipeline's tracked outputs."""
    path = Path(output_dir) if output_dir else scratch_dir(slug)
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_tmpdir(parent: Path, prefix: str) -> Path:
    """A temporary directory inside ``parent`` (same filesystem, so it can be renamed into place) with the
    usual permissions (mkdtemp alone makes it private to the user)."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def list_papers() -> list[str]:
    root = repo_root() / "papers"
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(("_", ".")) and (p / f"{p.name}.nb.py").exists()
    )
