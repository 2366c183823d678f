"""What `papers run` must never do (destroy a user's files, overwrite committed results silently) and the
one-line errors at the boundary: each case runs the real CLI on a minimal repository with a fast paper."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_toy_repo, papers_cli


@pytest.fixture()
def toy(tmp_path) -> Path:
    return make_toy_repo(tmp_path)


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return papers_cli(*args, cwd=root, env={"REPLICATIONS_ROOT": str(root)}, timeout=300)


def one_line_error(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_out_refuses_a_directory_with_user_files(toy, tmp_path):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("keep me")
    (mine / "sub" / "thesis.tex").write_text("\\documentclass{article}")
    res = run(toy, "run", "toy", "--quiet", "--out", str(mine))
    one_line_error(res, "holds files that are not a previous run's output (important.txt, sub)")
    assert (mine / "important.txt").read_text() == "keep me"
    assert (mine / "sub" / "thesis.tex").exists()


@pytest.mark.parametrize("where", [".", "..", "/"])
def test_out_refuses_the_repository_and_its_ancestors_even_with_force(toy, where):
    res = run(toy, "run", "toy", "--quiet", "--force", "--out", where)
    one_line_error(res, "it is the repository or a directory that contains it")
    assert (toy / "papers" / "toy" / "toy.nb.py").exists()


def test_out_refuses_a_top_level_directory_of_the_repository(toy):
    res = run(toy, "run", "toy", "--quiet", "--force", "--out", "papers")
    one_line_error(res, "a top-level directory of the repository")


@pytest.mark.slow
def test_force_replaces_and_a_previous_run_is_replaced_without_it(toy, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scratch.txt").write_text("x")
    assert run(toy, "run", "toy", "--quiet", "--force", "--out", str(mine)).returncode == 0
    assert not (mine / "scratch.txt").exists() and (mine / "metrics.json").exists()
    again = run(toy, "run", "toy", "--quiet", "--out", str(mine))  # a previous run's output: no --force
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_non_pipeline_runs_never_touch_results(toy):
    smoke = run(toy, "run", "toy", "--quiet", "--profile", "smoke")
    assert smoke.returncode == 0, smoke.stderr
    assert (toy / "scratch" / "runs" / "toy" / "smoke" / "metrics.json").exists()
    custom = run(toy, "run", "toy", "--quiet", "--set", "effect=0.2")
    assert custom.returncode == 0, custom.stderr
    assert (toy / "scratch" / "runs" / "toy" / "small-custom" / "metrics.json").exists()
    assert not (toy / "results").exists()
    pipeline = run(toy, "run", "toy", "--quiet")  # params.yaml's profile, no --set: what a DVC stage runs
    assert pipeline.returncode == 0, pipeline.stderr
    record = json.loads((toy / "results" / "toy" / "metrics.json").read_text())
    assert [c["verdict"] for c in record["claims"]] == ["reproduced", "passed"]
    flat = json.loads((toy / "results" / "toy" / "verdicts.json").read_text())
    assert flat["claims"]["gap"]["verdict"] == 1


def test_params_yaml_syntax_error_is_one_line(toy):
    (toy / "params.yaml").write_text("profile: small\ntoy:\n  effect: [0.05\n")
    res = run(toy, "check", "toy")
    one_line_error(res, "params.yaml line")
    assert "not valid YAML" in res.stderr


def test_non_finite_float_is_rejected(toy):
    one_line_error(run(toy, "check", "toy", "--set", "effect=.inf"), "parameter 'effect' = inf is not finite")
    one_line_error(run(toy, "check", "toy", "--set", "effect=.nan"), "is not finite")


def test_missing_registry_and_bad_registry_are_one_line(toy):
    registry = toy / "papers" / "toy" / "claims.yaml"
    registry.write_text(registry.read_text().replace("direction: greater", "direction: upward"))
    one_line_error(run(toy, "check", "toy"), "claim 'gap': direction must be one of")
    registry.unlink()
    one_line_error(run(toy, "check", "toy"), "no claim registry")


def test_missing_data_is_caught_before_the_kernel_starts(toy):
    (toy / "dvc.yaml").write_text("stages:\n  toy:\n    cmd: papers run toy\n    deps:\n      - data/corpus\n")
    one_line_error(run(toy, "check", "toy"), "input data/corpus is missing: run `make data`")
    (toy / "data" / "corpus").mkdir(parents=True)
    one_line_error(run(toy, "check", "toy"), "input data/corpus is missing")  # empty counts as missing
    (toy / "data" / "corpus" / "a.txt").write_text("x")
    assert run(toy, "check", "toy").returncode == 0


def test_unavailable_device_is_one_line(toy):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(run(toy, "check", "toy", "--device", "cuda"), "CUDA is not available on this machine")


def test_unwritable_destination_is_one_line(toy):
    one_line_error(run(toy, "run", "toy", "--quiet", "--out", "/proc/toy-results"), "cannot write in /proc")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_leave_nothing_behind_and_print_one_line(toy, tmp_path, sig):
    out = tmp_path / "killed"
    exe = Path(sys.executable).with_name("papers")
    import os

    env = {**os.environ, "REPLICATIONS_ROOT": str(toy)}
    proc = subprocess.Popen([str(exe), "run", "toy", "--quiet", "--set", "sleep=60", "--out", str(out)],
                            cwd=toy, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".killed.tmp-*/*")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".killed.tmp-*")), "the run never started"
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("papers run: interrupted")
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert not out.exists() and not list(tmp_path.glob(".killed.tmp-*"))


def test_broken_pipe_is_quiet(toy):
    exe = Path(sys.executable).with_name("papers")
    res = subprocess.run(f"'{exe}' list | head -n 1", shell=True, cwd=toy, capture_output=True, text=True,
                         env={**__import__("os").environ, "REPLICATIONS_ROOT": str(toy)}, timeout=120)
    assert res.stdout.startswith("paper") and res.stderr == ""
