"""Run one paper: parameters -> validated values -> papermill -> checked outputs moved into place.

What ``papers run SLUG`` (and so every DVC stage) does, in order:

1. read the notebook's ``parameters`` cell and resolve the values (params.yaml section, profile,
   ``--set`` overrides); any problem is one :class:`~shared.params.ParamError` line, before any compute;
2. force offline mode for the Hugging Face libraries, fix thread and plotting settings;
3. execute the notebook with papermill in a fresh temporary directory next to the destination, with
   cell progress on the terminal and the notebook's own output (tqdm bars) streamed through;
4. check that the notebook wrote a ``metrics.json`` that matches the schema;
5. write ``runtime.json`` (wall time and other facts that vary between runs) and only then replace
   the destination directory with the temporary one.

A failure at any step leaves the destination as it was (DVC has already removed the stage's outputs,
so nothing valid-looking remains) and reports the failing cell as one readable block. The executed
notebook of a failed run is kept as ``<destination>.FAILED.ipynb`` for inspection.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shared import paths
from shared.metrics import MetricsError, load_metrics
from shared.params import ParamError, load_params_file, read_notebook_params, resolve

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MPLBACKEND": "Agg",
    "PYTHONHASHSEED": "0",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
DEVICE_CHOICES = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class RunError(RuntimeError):
    """The notebook failed or wrote invalid outputs; the message is the readable report."""


@dataclass
class RunResult:
    slug: str
    profile: str
    out_dir: Path
    wall_time_s: float
    metrics: dict[str, Any]


def prepare(slug: str, profile: str = "small", overrides: dict[str, Any] | None = None,
            device: str = "auto") -> dict[str, Any]:
    """Resolve and validate a paper's parameters without running anything (the runner's first step)."""
    root = paths.repo_root()
    if slug not in paths.list_papers():
        known = ", ".join(paths.list_papers()) or "none"
        raise ParamError(f"unknown paper {slug!r} (papers: {known})")
    if not DEVICE_CHOICES.match(device):
        raise ParamError(f"{slug}: device must be auto, cpu, mps, cuda or cuda:N; got {device!r}")
    specs = read_notebook_params(paths.notebook_path(slug))
    return resolve(specs, load_params_file(root / "params.yaml"), slug, profile, overrides)


def format_cell_error(exc: Exception, notebook_hint: str = "") -> str:
    """Turn a papermill execution error into one readable block: cell, exception, where it was raised."""
    cell = getattr(exc, "cell_index", None)
    count = getattr(exc, "exec_count", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    tb_lines = _ANSI.sub("", "\n".join(getattr(exc, "traceback", []) or [])).splitlines()
    where = [ln.rstrip() for ln in tb_lines
             if ln.lstrip().startswith(("File ", "Cell In")) or re.match(r"^\s*-+>\s*\d+", ln)]
    lines = [f"notebook cell {cell} (In [{count}]) raised {ename}: {evalue}".rstrip()]
    if where:
        lines.append("  where (innermost last):")
        lines += [f"    {ln.strip()}" for ln in where[-8:]]
    if notebook_hint:
        lines.append(f"  executed notebook with the error: {notebook_hint}")
    return "\n".join(lines)


def _terminate_as_interrupt(signum, frame):  # pragma: no cover - exercised via subprocess in tests
    raise KeyboardInterrupt(f"signal {signum}")


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` to ``dest``, replacing it; keep a ``.gitignore`` DVC may have written in ``dest``."""
    backup = None
    if dest.exists():
        gitignore = dest / ".gitignore"
        if gitignore.exists() and not (tmp / ".gitignore").exists():
            shutil.copy2(gitignore, tmp / ".gitignore")
        backup = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, backup)
    os.replace(tmp, dest)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def run_paper(
    slug: str,
    profile: str = "small",
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> RunResult:
    """Execute ``slug``'s notebook and install its outputs in ``out_dir`` (default ``results/<slug>``)."""
    values = prepare(slug, profile, overrides, device)
    root = paths.repo_root()
    dest = Path(out_dir).resolve() if out_dir else paths.results_dir(slug)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failed_nb = dest.with_name(f"{dest.name}.FAILED.ipynb")
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = paths.make_tmpdir(dest.parent, f".{dest.name}.tmp-")

    import jupytext
    import papermill

    # papermill cannot parse annotated parameters whose comments hold '=' (our constraints) and warns
    # about each line; the runner has already validated every parameter itself.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    os.environ.update(OFFLINE_ENV)
    os.environ["REPLICATIONS_ROOT"] = str(root)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    nb = jupytext.read(paths.notebook_path(slug))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    injected = {**values, "profile": profile, "device": device, "output_dir": str(tmp),
                "progress": progress}
    executed = tmp / "notebook.ipynb"
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    start = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    try:
        try:
            papermill.execute_notebook(
                nb, str(executed), parameters=injected, kernel_name="python3",
                cwd=str(paths.paper_dir(slug)), progress_bar=progress,
                stdout_file=sys.stdout if progress else None,
                stderr_file=sys.stderr if progress else None,
                # the kernel's own start-up warnings are noise here; cell errors still come through
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except papermill.PapermillExecutionError as exc:
            if executed.exists():
                shutil.copy2(executed, failed_nb)
            raise RunError(f"{slug}: " + format_cell_error(exc, str(failed_nb))) from None
        wall = time.perf_counter() - start
        metrics_path = tmp / "metrics.json"
        if not metrics_path.exists():
            raise RunError(f"{slug}: the notebook finished without writing metrics.json")
        try:
            metrics = load_metrics(metrics_path)
        except (MetricsError, json.JSONDecodeError) as exc:
            raise RunError(f"{slug}: invalid metrics.json: {exc}") from None
        if metrics["paper"]["slug"] != slug or metrics["profile"] != profile:
            raise RunError(f"{slug}: metrics.json names paper {metrics['paper']['slug']!r} / profile "
                           f"{metrics['profile']!r}, expected {slug!r} / {profile!r}")
        runtime = {
            "wall_time_s": round(wall, 2),
            "started_at": started_at.isoformat(timespec="seconds"),
            "profile": profile,
            "device": metrics["device"],
            "cpu_count": os.cpu_count(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        (tmp / "runtime.json").write_text(json.dumps(runtime, indent=2) + "\n")
        _replace_dir(tmp, dest)
        failed_nb.unlink(missing_ok=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return RunResult(slug, profile, dest, wall, metrics)


def verdict_line(metrics: dict[str, Any]) -> str:
    parts = [f"{c['id']}={c['verdict']}" for c in metrics["claims"]]
    return ", ".join(parts)
