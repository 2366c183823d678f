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
from shared.claims import RegistryError, load_claims, registry_path
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
    """Resolve and validate a paper's parameters and its claim registry without running anything (the
    runner's first step)."""
    root = paths.repo_root()
    if slug not in paths.list_papers():
        known = ", ".join(paths.list_papers()) or "none"
        raise ParamError(f"unknown paper {slug!r} (papers: {known})")
    if not DEVICE_CHOICES.match(device):
        raise ParamError(f"{slug}: device must be auto, cpu, mps, cuda or cuda:N; got {device!r}")
    try:
        load_claims(slug)
    except RegistryError as exc:
        raise ParamError(str(exc)) from None
    specs = read_notebook_params(paths.notebook_path(slug))
    values = resolve(specs, load_params_file(root / "params.yaml"), slug, profile, overrides)
    check_data(slug)
    check_device(slug, device)
    return values


def stage_data_deps(slug: str) -> list[str]:
    """The ``data/<name>`` inputs the paper's DVC stage declares (fetched by the data stages)."""
    import yaml

    try:
        stages = yaml.safe_load((paths.repo_root() / "dvc.yaml").read_text())["stages"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return []
    deps = (stages.get(slug) or {}).get("deps") or []
    return [d for d in deps if isinstance(d, str) and d.startswith("data/") and d != "data/sources.yaml"]


def check_data(slug: str) -> None:
    """Every fetched input the stage declares is present (not an empty directory), before the kernel starts."""
    root = paths.repo_root()
    for dep in stage_data_deps(slug):
        path = root / dep
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            name = Path(dep).name
            raise ParamError(f"{slug}: input {dep} is missing: run `make data` (or `dvc repro data_{name}`; "
                             "offline, set REPLICATIONS_DATA_MIRROR to the dataset mirror first)")


def check_device(slug: str, device: str) -> None:
    """An explicitly requested accelerator exists (``auto`` falls back to the CPU by itself)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ParamError(f"{slug}: --device {device} asked for, but CUDA is not available on this machine "
                             "(use --device auto or cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ParamError(f"{slug}: --device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ParamError(f"{slug}: --device mps asked for, but MPS is not available on this machine "
                             "(use --device auto or cpu)")


def pipeline_profile() -> str:
    """The profile ``dvc repro`` runs: the tracked ``profile`` key of params.yaml."""
    return str(load_params_file(paths.repo_root() / "params.yaml").get("profile", "small"))


def default_destination(slug: str, profile: str, overrides: dict[str, Any] | None) -> Path:
    """Where a run without ``--out`` writes. The pipeline's own run (params.yaml's profile, no overrides:
    what a DVC stage calls) writes ``results/<slug>``; any other run goes to ``scratch/runs/<slug>/...`` so
    that it never replaces the committed results silently."""
    if profile == pipeline_profile() and not overrides:
        return paths.results_dir(slug)
    name = profile + ("-custom" if overrides else "")
    return paths.repo_root() / "scratch" / "runs" / slug / name


def is_run_output(path: Path) -> bool:
    """Whether ``path`` holds a previous run's output: the runner's ``runtime.json`` beside a metrics file."""
    try:
        runtime = json.loads((path / "runtime.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(runtime, dict) and "wall_time_s" in runtime and (path / "metrics.json").is_file()


def check_destination(dest: Path, slug: str, force: bool = False) -> None:
    """Refuse a destination the run would destroy, before any compute (one-line :class:`ParamError`).

    The destination directory is replaced as a whole, so it must be the paper's own results directory,
    a previous run's output, an empty or absent directory, or (with ``force``) another directory. The
    repository root and its ancestors are refused even with ``force``.
    """
    dest = dest.resolve()
    root = paths.repo_root().resolve()
    if dest == root or dest in root.parents:
        raise ParamError(f"{slug}: refusing --out {dest}: it is the repository or a directory that contains "
                         "it; choose a new or empty directory")
    if dest.exists() and not dest.is_dir():
        raise ParamError(f"{slug}: refusing --out {dest}: it is a file, not a directory")
    if dest == paths.results_dir(slug).resolve() or not dest.exists():
        return
    if dest.parent == root or any(p == root / ".git" for p in (dest, *dest.parents)):
        raise ParamError(f"{slug}: refusing --out {dest}: a top-level directory of the repository (or .git) "
                         "is not an output directory")
    contents = [p.name for p in dest.iterdir() if p.name != ".gitignore"]
    if contents and not is_run_output(dest) and not force:
        shown = ", ".join(sorted(contents)[:3]) + (", ..." if len(contents) > 3 else "")
        raise ParamError(f"{slug}: refusing --out {dest}: it holds files that are not a previous run's output "
                         f"({shown}); the run replaces the whole directory. Choose a new directory, or pass "
                         "--force to replace it")
    writable_parent = dest.parent
    if not os.access(writable_parent, os.W_OK):
        raise ParamError(f"{slug}: cannot write to {writable_parent} (permission denied); choose another --out")


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
    # Kill the kernel first: if the client closed its sockets while the kernel still ran a cell, the kernel
    # would print a traceback of its own on the way out.
    _kill_children()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _kill_children() -> None:
    """Kill this process's child processes (the notebook's kernel) at once, quietly."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the lock
        return
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass


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
    force: bool = False,
) -> RunResult:
    """Execute ``slug``'s notebook and install its outputs in ``out_dir`` (default: see
    :func:`default_destination`); ``force`` allows replacing a directory that is not a run's output."""
    values = prepare(slug, profile, overrides, device)
    root = paths.repo_root()
    dest = Path(out_dir).resolve() if out_dir else default_destination(slug, profile, overrides)
    check_destination(dest, slug, force=force)
    registry = registry_state(slug)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParamError(f"{slug}: cannot create {dest.parent}: {exc.strerror}") from None
    failed_nb = dest.with_name(f"{dest.name}.FAILED.ipynb")
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp = paths.make_tmpdir(dest.parent, f".{dest.name}.tmp-")
    except OSError as exc:
        raise ParamError(f"{slug}: cannot write in {dest.parent} ({exc.strerror}); choose another --out") from None

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
    # Ctrl-C, SIGTERM and SIGHUP (a closed terminal) end the run alike: the finally clause removes the
    # temporary directory and the destination is left as it was.
    previous = {sig: signal.signal(sig, _terminate_as_interrupt)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
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
            "cpu": cpu_info(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "registry": registry,
        }
        (tmp / "runtime.json").write_text(json.dumps(runtime, indent=2) + "\n")
        _replace_dir(tmp, dest)
        failed_nb.unlink(missing_ok=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return RunResult(slug, profile, dest, wall, metrics)


# instruction-set extensions that decide which kernels torch's CPU libraries pick, and so a run's float
# rounding: two machines that differ in these most likely give results that differ in the last digits
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's model name and which of :data:`CPU_FEATURES` it has, from ``/proc/cpuinfo`` (Linux; text
    given for tests); elsewhere the platform's processor string and no feature list."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"model": platform.processor() or platform.machine(), "features": None}
    fields = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "features": [f for f in CPU_FEATURES if f in flags]}


def registry_state(slug: str) -> dict[str, Any]:
    """Evidence of pre-registration taken when the run starts: the commit checked out and whether the
    claim registry was committed unchanged in it (``papers prereg`` uses this for results not yet
    committed). Outside a git checkout both are null."""
    import subprocess

    root = paths.repo_root()
    rel = str(registry_path(slug).relative_to(root))

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", rel)
    in_head = git("cat-file", "-e", f"HEAD:{rel}") is not None
    committed = None if head is None or status is None else (status == "" and in_head)
    return {"path": rel, "head": head, "committed": committed}


def verdict_line(metrics: dict[str, Any]) -> str:
    parts = [f"{c['id']}={c['verdict']}" for c in metrics["claims"]]
    return ", ".join(parts)
