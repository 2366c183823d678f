"""The runner end to end: validation before compute, smoke execution, determinism, failure and kill safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_toy_repo, papers_cli
from shared.runner import cpu_info, format_cell_error


@pytest.mark.parametrize("args,needle", [
    (["--set", "n=1"], "parameter 'n' = 1 violates `2 <= x <= 32`"),
    (["--set", "steps=many"], "parameter 'steps' must be int, got 'many' (str)"),
    (["--set", "bogus=3"], "unknown parameter 'bogus'"),
    (["--set", "scratch_tokens=[0, 1]"], "parameter 'scratch_tokens'"),
    (["--set", "device=cpu"], "'device' is set by the runner"),
    (["--device", "tpu"], "device must be auto, cpu, mps, cuda or cuda:N"),
])
def test_bad_parameters_fail_fast_with_one_line(tmp_path, args, needle):
    start = time.perf_counter()
    res = papers_cli("run", "inverse_permutation", "--out", str(tmp_path / "out"), *args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - start < 20  # no kernel was started


def test_unknown_paper_and_profile(tmp_path):
    res = papers_cli("run", "no_such_paper", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "unknown paper 'no_such_paper'" in res.stderr
    res = papers_cli("run", "inverse_permutation", "--profile", "huge")
    assert res.returncode == 2 and "invalid choice: 'huge'" in res.stderr


def test_check_prints_resolved_parameters():
    res = papers_cli("check", "inverse_permutation", "--profile", "smoke", "--set", "steps=7")
    assert res.returncode == 0
    assert "steps = 7" in res.stdout and "n = 6" in res.stdout


@pytest.mark.slow
def test_smoke_run_is_complete_and_deterministic(tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = papers_cli("run", "inverse_permutation", "--profile", "smoke", "--quiet", "--out", str(out))
        assert res.returncode == 0, res.stderr
        outs.append(out)
    a, b = outs
    expected = {"metrics.json", "runtime.json", "notebook.ipynb", "per_seed.csv", "loss_curves.csv",
                "accuracy_by_arm.csv", "accuracy_vs_scratch_tokens.png"}
    assert expected <= {p.name for p in a.iterdir()}
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert (a / "accuracy_vs_scratch_tokens.png").read_bytes() == (b / "accuracy_vs_scratch_tokens.png").read_bytes()
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["profile"] == "smoke" and metrics["device"] == "cpu" and metrics["seeds"] == [0]
    assert metrics["params"]["n"] == 6
    runtime = json.loads((a / "runtime.json").read_text())
    assert runtime["wall_time_s"] > 0 and runtime["profile"] == "smoke"
    assert runtime["cpu"] == cpu_info() and runtime["cpu"]["model"]
    assert not list(tmp_path.glob(".*tmp-*"))


def test_cpu_info_reads_the_first_processor_of_proc_cpuinfo():
    text = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
            "flags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile avx512_bf16x\n\n"
            "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    # known features in CPU_FEATURES order; a flag that only starts like one (avx512_bf16x) is not it
    assert cpu_info(text) == {"model": "Intel(R) Xeon(R) Processor", "features": ["avx2", "avx512f", "amx_bf16",
                                                                                  "amx_tile"]}
    assert cpu_info("processor\t: 0\nmodel name\t: Old\nflags\t\t: sse2 avx\n") == {"model": "Old",
                                                                                       "features": []}


def _broken_repo(tmp_path: Path) -> Path:
    """A minimal repository whose one paper fails inside a helper module."""
    notebook = ('# %% tags=["parameters"]\n'
                'profile: str = "small"  # runner\ndevice: str = "auto"  # runner\n'
                'output_dir: str = ""  # runner\nprogress: bool = True  # runner\nx: int = 1  # input | x > 0\n\n'
                '# %%\nfrom pathlib import Path\nPath(output_dir, "metrics.json").write_text("{}")\n\n'
                '# %%\nfrom broken_helper import explode\nexplode(x)\n')
    root = make_toy_repo(tmp_path, slug="broken", notebook=notebook, params="  x: 1\n")
    (root / "papers" / "broken" / "broken_helper.py").write_text("def explode(x):\n    raise ValueError(f'x was {x}')\n")
    return root


@pytest.mark.slow
def test_failing_notebook_leaves_nothing_valid_and_reports_one_block(tmp_path):
    root = _broken_repo(tmp_path)
    out = root / "results" / "broken"
    res = papers_cli("run", "broken", "--quiet", "--out", str(out), cwd=root,
                     env={"REPLICATIONS_ROOT": str(root)})
    assert res.returncode == 1
    err = res.stderr
    assert "FAILED broken: notebook cell" in err and "raised ValueError: x was 1" in err
    assert "broken_helper.py" in err and "explode" in err
    assert "Traceback" not in err and len(err.splitlines()) < 15
    assert not out.exists()
    assert (root / "results" / "broken.FAILED.ipynb").exists()
    assert not list((root / "results").glob(".*tmp-*"))


@pytest.mark.slow
def test_killed_run_leaves_no_results(tmp_path):
    out = tmp_path / "killed"
    exe = Path(sys.executable).with_name("papers")
    proc = subprocess.Popen([str(exe), "run", "inverse_permutation", "--profile", "smoke", "--quiet",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".killed.tmp-*/*")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".killed.tmp-*")), "the run never started writing"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    assert not list(tmp_path.glob(".killed.tmp-*"))


def test_format_cell_error_is_compact():
    class FakeError(Exception):
        cell_index, exec_count, ename, evalue = 7, 5, "KeyError", "'n'"
        traceback = ["\x1b[31m---------\x1b[0m", "KeyError Traceback (most recent call last)",
                     "Cell In[5], line 3", "      1 a = 1", "----> 3 f(a)", "",
                     "File /x/mod.py:10, in f(a)", "---> 10     return d['n']", "KeyError: 'n'"]

    text = format_cell_error(FakeError(), "x.FAILED.ipynb")
    assert text.splitlines()[0] == "notebook cell 7 (In [5]) raised KeyError: 'n'"
    assert "Cell In[5], line 3" in text and "File /x/mod.py:10, in f(a)" in text
    assert "---> 10     return d['n']" in text and "1 a = 1" not in text
    assert "x.FAILED.ipynb" in text and "\x1b" not in text
