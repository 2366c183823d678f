"""Pipeline checks: every paper is wired the same way, files on disk match the stages, the READMEs are current,
and a second `dvc repro` reruns nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from shared import paths
from shared.deps import stage_code_deps
from shared.params import RUNNER_PARAMS, PROFILES, load_params_file, read_notebook_params, resolve
from shared.report import check_report

ROOT = paths.repo_root()  # REPLICATIONS_ROOT lets the scaffold test run these checks on a scratch repo
PAPERS = paths.list_papers()
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = load_params_file(ROOT / "params.yaml")


def test_there_are_papers():
    assert "inverse_permutation" in PAPERS


@pytest.mark.parametrize("slug", PAPERS)
def test_paper_directory_has_the_contract_files(slug):
    d = ROOT / "papers" / slug
    for name in ("__init__.py", "README.md", f"{slug}.nb.py"):
        assert (d / name).exists(), f"papers/{slug}/{name} is missing"
    readme = (d / "README.md").read_text()
    assert "<!-- results:begin -->" in readme and "<!-- results:end -->" in readme
    assert (ROOT / "tests" / f"test_{slug}.py").exists(), f"tests/test_{slug}.py is missing"
    from shared.papermeta import read_meta

    meta = read_meta(slug)
    assert set(meta) >= {"title", "url", "grade", "citation"}
    bib = (d / "paper.bib").read_text() if (d / "paper.bib").exists() else ""
    assert bib.lstrip().startswith("@"), f"papers/{slug}/paper.bib (the BibTeX of the replicated paper) is missing"
    for field in ("author", "title", "year", "url"):
        assert re.search(rf"^\s*{field}\s*=", bib, re.M), f"papers/{slug}/paper.bib has no {field}"
    assert meta["url"] in bib, f"papers/{slug}/paper.bib does not cite {meta['url']}"
    assert meta["grade"] in {"A", "B", "C", "D"} and meta["url"].startswith("https://")


@pytest.mark.parametrize("slug", PAPERS)
def test_no_unfilled_scaffold_markers(slug):
    """A paper made by `papers new` is not a replication until every TODO(papers new) is replaced."""
    from shared.scaffold import MARKER

    files = list((ROOT / "papers" / slug).glob("*")) + [ROOT / "tests" / f"test_{slug}.py"]
    left = [str(f.relative_to(ROOT)) for f in files if f.is_file() and MARKER in f.read_text()]
    assert not left, f"unfilled scaffold in {left}"


@pytest.mark.parametrize("slug", PAPERS)
def test_stage_matches_files_on_disk(slug):
    stage = DVC["stages"].get(slug)
    assert stage, f"dvc.yaml has no stage {slug!r}"
    assert stage["cmd"] == f"papers run {slug} --profile ${{profile}}"
    deps = set(stage["deps"])
    code = {d for d in deps if d.endswith(".py") or d.endswith("/claims.yaml")}
    expected = set(stage_code_deps(slug))
    assert f"papers/{slug}/claims.yaml" in expected, f"papers/{slug}/claims.yaml (the claim registry) is missing"
    assert code == expected, (f"stage {slug}: missing {sorted(expected - code)}, extra {sorted(code - expected)}; "
                              f"run `papers deps {slug} --write`")
    assert all(d in code or d.startswith("data/") for d in deps), "deps are code, the registry or data/ inputs"
    assert f"papers/{slug}/README.md" not in deps  # the report stage writes it
    # data inputs come from a data stage (absent on a fresh clone until `make data`); code must exist
    produced = {out for name, st in DVC["stages"].items() if name.startswith("data_") for out in st.get("outs", [])}
    for dep in deps:
        assert (ROOT / dep).exists() or dep in produced, f"stage {slug} depends on {dep}, which nothing produces"
    from shared.scaffold import stage_params

    assert stage["params"] == stage_params(slug), f"run `papers deps {slug} --write` (params of the active profile)"
    assert "small" in (PARAMS[slug].get("profiles") or {}), f"params.yaml {slug}.profiles needs `small: {{}}`"
    outs = []
    for key in ("outs", "metrics", "plots"):
        for item in stage.get(key, []):
            outs.append(next(iter(item)) if isinstance(item, dict) else item)
    assert all(o.startswith(f"results/{slug}/") for o in outs), outs
    assert f"results/{slug}/metrics.json" in outs and f"results/{slug}/notebook.ipynb" in outs
    assert f"results/{slug}/verdicts.json" in outs


@pytest.mark.parametrize("slug", PAPERS)
def test_notebook_defaults_equal_params_yaml(slug):
    """JupyterLab runs what the pipeline runs: the notebook's defaults are the `small` section."""
    specs = read_notebook_params(paths.notebook_path(slug))
    section = {k: v for k, v in PARAMS[slug].items() if k != "profiles"}
    paper_specs = {k: s for k, s in specs.items() if k not in RUNNER_PARAMS}
    assert set(section) == set(paper_specs), "params.yaml section and notebook parameters differ"
    for key, spec in paper_specs.items():
        assert section[key] == spec.default, f"{slug}.{key}: params.yaml {section[key]!r} != notebook {spec.default!r}"
    assert specs["profile"].default == "small" and specs["device"].default == "auto"


@pytest.mark.parametrize("slug", PAPERS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_validates(slug, profile):
    specs = read_notebook_params(paths.notebook_path(slug))
    resolve(specs, PARAMS, slug, profile)


def test_default_profile_is_small():
    assert PARAMS["profile"] == "small"


def test_every_stage_is_a_paper_data_or_report_stage():
    for name, stage in DVC["stages"].items():
        assert name in PAPERS or name == "report" or name.startswith("data_"), name


def test_dvc_accepts_the_pipeline_files():
    """DVC's own schema check (a list where DVC wants a string fails here, not at `make repro`)."""
    dvc = Path(sys.executable).parent / "dvc"
    res = subprocess.run([str(dvc), "stage", "list"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    listed = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
    assert listed == set(DVC["stages"])


def test_committed_results_match_the_code_params_and_readmes():
    """dvc.lock records what produced the committed results: every file dependency of a paper or report
    stage (code, not fetched data) and every README the report wrote must still have the recorded md5, and the
    recorded params must equal params.yaml, or `make repro` would rerun stages after a fresh clone."""
    import hashlib

    lock = load_params_file(ROOT / "dvc.lock")["stages"]  # YAML 1.2 floats (1e-3), as DVC reads them
    params = load_params_file(ROOT / "params.yaml")
    stale = []
    for name, stage in lock.items():
        if name.startswith("data_"):
            continue
        files = [d for d in stage.get("deps", []) if "md5" in d and not d["path"].startswith("data/")
                 and not d["path"].startswith("results/")]
        if name == "report":
            files += stage.get("outs", [])
        for item in files:
            path = ROOT / item["path"]
            if not path.is_file() or hashlib.md5(path.read_bytes()).hexdigest() != item["md5"]:
                stale.append(f"{name}: {item['path']}")
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():
            current = params
            for part in key.split("."):  # DVC records dotted keys (slug.steps, slug.profiles.small)
                current = current.get(part) if isinstance(current, dict) else None
            if current != value:
                stale.append(f"{name}: params {key}")
    assert not stale, f"results are stale for {stale[:10]}: run `dvc repro` and commit dvc.lock"


@pytest.mark.parametrize("slug", PAPERS)
def test_registry_code_and_results_agree(slug):
    """The registry is the text of record: it parses, the notebook evaluates exactly its claims (checked by
    write_metrics at run time), and the committed results were produced under this very registry."""
    import hashlib
    import json

    from shared.claims import load_claims

    claims = load_claims(slug)  # raises with the claim and field on any problem
    metrics_path = ROOT / "results" / slug / "metrics.json"
    if not metrics_path.exists():  # registered and committed, not run yet: the report says "not run yet"
        pytest.skip(f"{slug}: registered, not run under this registry yet (`dvc repro {slug}`)")
    record = json.loads(metrics_path.read_text())
    assert record.get("schema_version") == 2, f"results/{slug}: old metrics schema; rerun the stage"
    sha = hashlib.sha256((ROOT / "papers" / slug / "claims.yaml").read_bytes()).hexdigest()
    assert record["registry"]["sha256"] == sha, f"results/{slug} were produced under another claims.yaml"
    assert [c["id"] for c in record["claims"]] == list(claims)
    for c in record["claims"]:
        reg = claims[c["id"]]
        assert (c["kind"], c["statement"], c["criterion"], c["source"], c["paper_value"], c["metric"]) == (
            reg.kind, reg.statement, reg.criterion, reg.source, reg.paper_value, reg.metric)
        assert c["gate"]["condition"] == reg.gate_condition and c["control"]["arm"] == reg.control_arm
        assert (c["gate"]["passed"] is not None) == reg.has_gate
        assert (c["control"]["measured"] is not None) == reg.has_control


@pytest.mark.parametrize("slug", PAPERS)
def test_committed_cpu_results_are_within_their_budget(slug):
    """Each paper's committed `small` run on the CPU took at most its budget (ten minutes, or a written-down
    exception in shared.report); the wall time is the one the runner measured around the whole notebook."""
    import json

    from shared.report import CPU_BUDGET_S, budget_status

    runtime_path = ROOT / "results" / slug / "runtime.json"
    if not runtime_path.exists():
        pytest.skip(f"{slug}: no committed results")
    runtime = json.loads(runtime_path.read_text())
    record = json.loads((ROOT / "results" / slug / "metrics.json").read_text())
    assert runtime["profile"] == record["profile"] and runtime["device"] == record["device"]
    limit, note = budget_status(slug, runtime["profile"], runtime["device"], runtime["wall_time_s"])
    if limit is None:
        pytest.skip(f"{slug}: a {runtime['profile']} run on {runtime['device']} has no budget")
    assert limit >= CPU_BUDGET_S[runtime["profile"]]
    assert runtime["wall_time_s"] <= limit, f"results/{slug}: {runtime['wall_time_s']:.0f} s, {note}"


def test_budget_status_by_hand(monkeypatch):
    from shared import report

    monkeypatch.setattr(report, "BUDGET_EXCEPTIONS", {"slow": {"small": (700.0, "it must")}})
    assert report.budget_status("fast", "small", "cpu", 599.0) == (600, "")
    assert report.budget_status("fast", "small", "cpu", 601.0) == (600, "over the 600 s budget of `small` on a "
                                                                        "2-core CPU")
    assert report.budget_status("slow", "small", "cpu", 650.0) == (700.0, "over the 600 s budget of `small` on a "
                                                                          "2-core CPU: allowed up to 700 s "
                                                                          "because it must")
    assert report.budget_status("slow", "small", "cpu", 500.0) == (700.0, "")
    assert report.budget_status("fast", "small", "cuda", 5000.0) == (None, "")
    assert report.budget_status("fast", "full", "cpu", 5000.0) == (None, "")
    assert report.budget_status("fast", "smoke", "cpu", 61.0)[1].startswith("over the 60 s budget")


@pytest.mark.parametrize("slug", PAPERS)
def test_every_plot_series_is_declared(slug):
    """`dvc plots` shows every series of a curve table: declared at the top level with x and all its numeric
    columns as y (a stage-level plot takes one y and would show only the last column)."""
    from shared.scaffold import plot_series

    stage = DVC["stages"][slug]
    assert not stage.get("plots"), f"stage {slug}: move plots to the top-level `plots` (papers deps {slug} --write)"
    declared = [item for item in DVC.get("plots", []) if next(iter(item)).startswith(f"results/{slug}/")]
    outs = {next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])}
    for item in declared:
        (path, props), = item.items()
        assert path in outs, f"{path} is plotted but not an output of stage {slug}"
        if (ROOT / path).exists():
            assert props.get("y") == plot_series(ROOT / path, props["x"]), f"{path}: run `papers deps {slug} --write`"


def test_readme_tables_are_current():
    stale = check_report()
    assert not stale, f"run `papers report`: stale {', '.join(str(p) for p in stale)}"


def test_environment_yml_mirrors_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) - {"-e ."} == pins
    assert all("==" in p for p in pins), "every direct dependency is pinned"
    lock = {line.split("==")[0].lower(): line.strip() for line in (ROOT / "requirements.lock").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    for pin in pins:
        assert (lock.get(pin.split("==")[0].lower()) or "").lower() == pin, f"requirements.lock disagrees with {pin}"


def test_git_ignores_executed_and_paired_notebooks():
    ignored = subprocess.run(["git", "check-ignore", "papers/x/x.ipynb", "scratch/x/a.png",
                              "results/x.FAILED.ipynb"], cwd=ROOT, capture_output=True, text=True)
    assert len(ignored.stdout.split()) == 3


@pytest.mark.slow
def test_second_dvc_repro_reruns_nothing(tmp_path):
    """In a fresh clone (committed state + this working tree's changes), run the inverse_permutation stage
    at the smoke profile, then check that `dvc repro` of it again does nothing."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # bring the working tree's uncommitted changes along, so the test checks what is on disk
    for rel in subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.split():
        src, dst = ROOT / rel, clone / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    params = (clone / "params.yaml").read_text().replace("\nprofile: small\n", "\nprofile: smoke\n", 1)
    (clone / "params.yaml").write_text(params)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "REPLICATIONS_ROOT": str(clone)}
    dvc = str(Path(sys.executable).with_name("dvc"))
    first = subprocess.run([dvc, "repro", "inverse_permutation"], cwd=clone, env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'inverse_permutation'" in first.stdout
    second = subprocess.run([dvc, "repro", "inverse_permutation"], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 0
    assert "Running stage" not in second.stdout, second.stdout
    status = subprocess.run([dvc, "status", "inverse_permutation"], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=120)
    assert "up to date" in status.stdout, status.stdout

    # an edit of an inactive profile (here `full`) leaves the stage up to date; one of the active profile does not
    def edit_profile(name: str) -> str:
        import yaml as _yaml

        data = _yaml.safe_load((clone / "params.yaml").read_text())
        data["inverse_permutation"]["profiles"].setdefault(name, {})["n_eval"] = 123
        (clone / "params.yaml").write_text(_yaml.safe_dump(data, sort_keys=False))
        return subprocess.run([dvc, "status", "inverse_permutation"], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=120).stdout

    assert "up to date" in edit_profile("full")
    assert "inverse_permutation.profiles.smoke" in edit_profile("smoke")
