"""Data-fetch stages: mirror or URL, checksum verification, atomic install, clear errors."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest
import yaml

from shared.data import DataError, fetch, load_manifest, require

ROOT = Path(__file__).resolve().parents[1]
MIRROR = os.environ.get("REPLICATIONS_DATA_MIRROR", "")
needs_mirror = pytest.mark.skipif(not (MIRROR and Path(MIRROR, "scan").is_dir()),
                                  reason="the offline dataset mirror is not available")


def _manifest(tmp_path: Path, files: list[dict], name: str = "toy") -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({name: {"license": "test", "citation": "test", "files": files}}))
    return path


def test_manifest_is_complete_and_every_dataset_has_a_stage():
    manifest = load_manifest(ROOT / "data" / "sources.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {"scan", "tinyshakespeare", "aochildes", "eren"} <= set(manifest)
    for name, ds in manifest.items():
        assert ds.license and ds.citation, name
        for f in ds.files:
            assert len(f.sha256) == 64 or (not f.sha256 and len(f.md5) == 32), (name, f.path)
            assert f.url.startswith("https://") or "==" in f.wheel, (name, f.path)
        stage = stages[f"data_{name}"]
        assert stage["cmd"] == f"papers fetch {name}" and stage["outs"] == [f"data/{name}"]
        assert stage["params"] == [{"data/sources.yaml": [name]}]
    for name, stage in stages.items():
        if name.startswith("data_") and stage["cmd"].startswith("papers fetch "):
            assert name[5:] in manifest


def test_fetch_from_mirror_with_gzip_and_verification(tmp_path):
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    (mirror / "a.txt").write_text("hello\n")
    with gzip.open(mirror / "b.csv.gz", "wb") as fh:
        fh.write(b"x,y\n1,2\n")
    files = [
        {"path": "a.txt", "url": "file:///nonexistent/a.txt", "sha256": hashlib.sha256(b"hello\n").hexdigest()},
        {"path": "sub/b.csv", "url": "file:///nonexistent/b.csv", "mirror": "b.csv.gz",
         "sha256": hashlib.sha256(b"x,y\n1,2\n").hexdigest()},
    ]
    dest = fetch("toy", dest_root=tmp_path / "data", manifest=_manifest(tmp_path, files),
                 mirror=str(tmp_path / "mirror"))
    assert (dest / "a.txt").read_text() == "hello\n"
    assert (dest / "sub" / "b.csv").read_bytes() == b"x,y\n1,2\n"
    assert not list((tmp_path / "data").glob(".toy.tmp-*"))


def test_checksum_mismatch_aborts_and_installs_nothing(tmp_path):
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    (mirror / "a.txt").write_text("tampered\n")
    files = [{"path": "a.txt", "url": "file:///nonexistent", "sha256": hashlib.sha256(b"hello\n").hexdigest()}]
    with pytest.raises(DataError, match=r"a.txt from mirror .* has sha256 [0-9a-f]{64}, expected"):
        fetch("toy", dest_root=tmp_path / "data", manifest=_manifest(tmp_path, files),
              mirror=str(tmp_path / "mirror"))
    assert not (tmp_path / "data" / "toy").exists()
    assert not list((tmp_path / "data").glob(".toy.tmp-*"))


def test_download_from_url_and_failure_message(tmp_path):
    src = tmp_path / "remote.txt"
    src.write_text("remote\n")
    ok = [{"path": "r.txt", "url": src.as_uri(), "sha256": hashlib.sha256(b"remote\n").hexdigest()}]
    dest = fetch("toy", dest_root=tmp_path / "data", manifest=_manifest(tmp_path, ok), mirror="")
    assert (dest / "r.txt").read_text() == "remote\n"
    bad = [{"path": "r.txt", "url": (tmp_path / "missing.txt").as_uri(), "sha256": "0" * 64}]
    with pytest.raises(DataError, match="no mirror: set REPLICATIONS_DATA_MIRROR .* failed"):
        fetch("toy", dest_root=tmp_path / "data2", manifest=_manifest(tmp_path, bad), mirror="")
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        fetch("nope", dest_root=tmp_path, manifest=_manifest(tmp_path, ok))


def _zip(path: Path, members: dict[str, bytes]) -> bytes:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path.read_bytes()


def test_md5_verified_archive_is_unpacked_and_not_kept(tmp_path):
    blob = _zip(tmp_path / "remote.zip", {"pack/u.data": b"1\t2\n", "pack/other": b"skip"})
    files = [{"path": "pack.zip", "url": (tmp_path / "remote.zip").as_uri(), "md5": hashlib.md5(blob).hexdigest(),
              "extract": ["pack/u.data"]}]
    dest = fetch("toy", dest_root=tmp_path / "data", manifest=_manifest(tmp_path, files), mirror="")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == ["pack/u.data"]
    assert (dest / "pack" / "u.data").read_bytes() == b"1\t2\n"
    files[0]["md5"] = "0" * 32
    with pytest.raises(DataError, match=r"pack.zip from .* has md5 [0-9a-f]{32}, expected 0{32}"):
        fetch("toy", dest_root=tmp_path / "data2", manifest=_manifest(tmp_path, files), mirror="")


def test_optional_dataset_offline_records_unavailable(tmp_path, monkeypatch):
    from shared import data

    files = [{"path": "x.zip", "url": (tmp_path / "nowhere.zip").as_uri(), "md5": "0" * 32}]
    manifest = _manifest(tmp_path, files)
    spec = yaml.safe_load(manifest.read_text())
    spec["toy"]["optional"] = True
    manifest.write_text(yaml.safe_dump(spec))
    dest = fetch("toy", dest_root=tmp_path / "data", manifest=manifest, mirror="")
    assert [p.name for p in dest.iterdir()] == ["UNAVAILABLE"]
    first = (dest / "UNAVAILABLE").read_bytes()
    assert b"dvc repro --force data_toy" in first
    assert fetch("toy", dest_root=tmp_path / "data", manifest=manifest, mirror="") == dest
    assert (dest / "UNAVAILABLE").read_bytes() == first  # the same bytes on every offline machine
    monkeypatch.setattr(data.paths, "data_dir", lambda: tmp_path / "data")
    assert not data.available("toy") and not data.available("absent")
    (tmp_path / "data" / "real").mkdir()
    assert data.available("real")
    # reachable but wrong: still an error, optional or not
    blob = _zip(tmp_path / "bad.zip", {"a": b"a"})
    spec["toy"]["files"] = [{"path": "x.zip", "url": (tmp_path / "bad.zip").as_uri(),
                             "md5": hashlib.md5(blob + b"x").hexdigest()}]
    manifest.write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match="has md5"):
        fetch("toy", dest_root=tmp_path / "data3", manifest=manifest, mirror="")


def test_require_says_how_to_fetch():
    with pytest.raises(DataError, match=r"run `dvc repro data_not_a_dataset`"):
        require("not_a_dataset", "x.txt")


@needs_mirror
def test_fetch_scan_from_the_mirror_and_load_it_with_datasets(tmp_path):
    dest = fetch("scan", dest_root=tmp_path / "data")
    assert (dest / "LICENSE").exists()
    import datasets

    ds = datasets.load_dataset("text", data_files=str(dest / "simple_split" / "tasks_train_simple.txt"),
                               split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 16728
    first = ds[0]["text"]
    assert first.startswith("IN: ") and " OUT: " in first
