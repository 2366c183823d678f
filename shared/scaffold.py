"""``papers new SLUG``: a new paper from the template, wired into params.yaml, dvc.yaml and the tests.

The scaffold runs end to end at once (``papers run SLUG --profile smoke``) with a worked toy example, so
the author starts from a working notebook. It carries ``TODO(papers new)`` markers where the paper's own
claims, method and report go; a pipeline test fails while any marker is left, so an unfilled scaffold can
never pass for a replication.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import Any

from shared import paths

MARKER = "TODO(papers new)"


class ScaffoldError(ValueError):
    """The new paper cannot be created as asked (bad slug or URL, or it exists already)."""
SLUG_RE = re.compile(r"^[a-z][a-z0-9_]*$")

INIT = '''"""{title}."""

TITLE = {title!r}
URL = {url!r}
GRADE = {grade!r}
CITATION = "{marker}: authors. {title}. venue, year."
'''

METHOD = '''"""The paper's method, data generators and metrics as plain, tested functions.

{marker}: replace the worked example below with the paper's science. Cite the equation or section each
function implements in its docstring. The claims are registered in claims.yaml (see docs/claims.md), not
here; this module measures what they need.
"""

from __future__ import annotations

import numpy as np

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement


def sample_mean(mu: float, n_samples: int, seed: int) -> float:
    """Mean of ``n_samples`` draws of N(mu, 1) from a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return float(rng.normal(mu, 1.0, size=n_samples).mean())


def measure_example(estimates: list[float], control_estimates: list[float], n_samples: int,
                    tolerance: float) -> tuple[Measurement, Gate, Control]:
    """The example claim's statistic (estimates over seeds), its gate (the standard error 1/sqrt(n) is
    below half the tolerance, so the band can be resolved) and its control (estimates on data shifted by
    construction, which must fall outside the band)."""
    se = 1.0 / np.sqrt(n_samples)
    gate = Gate(passed=bool(se < tolerance / 2), value=float(se),
                detail=f"standard error {{se:.4f}} vs half the tolerance {{tolerance / 2:g}}")
    control = Control(seed_measurement(control_estimates, unit="estimate"), detail="N(mu + 0.5, 1) draws")
    return seed_measurement(estimates, unit="estimate"), gate, control
'''

REGISTRY = '''# The claim registry of {slug}: the text of record of what this replication tests (docs/claims.md).
# Commit it BEFORE the first `small` run of a claim; `papers prereg` checks that from git.
claims:
  - id: example_claim
    kind: replication
    statement: "{marker}: what the paper claims, in one sentence."
    source: "{marker}: where the paper says it (section, table, figure)"
    paper_value: "{marker}: the paper's number and its setting"
    metric: mean over seeds of the sample mean of N(mu, 1)
    unit: estimate
    direction: within
    target: 0.5
    tolerance: 0.05
    criterion: the t interval over seeds lies inside mu +- 0.05
    gate: the standard error per seed is below half the tolerance (the band can be resolved)
    control: the same estimate on N(mu + 0.5, 1) draws, which must fall outside the band
'''

NOTEBOOK = '''# %% [markdown]
# # {title}: replication
#
# [{url}]({url})
#
# {marker}: one paragraph on the paper and what this notebook tests. The claims, their gates and
# controls are registered in `claims.yaml`, committed before the first run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/{slug} (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds | len(x) >= 1 and len(set(x)) == len(x)
mu: float = 0.5  # true mean of the toy distribution
n_samples: int = 2000  # samples per seed | x >= 10

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from papers.{slug} import TITLE, URL
from papers.{slug}.method import measure_example, sample_mean
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "{slug}")

# %% [markdown]
# ## Experiment

# %%
results = pd.DataFrame([{{"seed": s, "estimate": sample_mean(mu, n_samples, s),
                          "control_estimate": sample_mean(mu + 0.5, n_samples, s)}} for s in seeds])
results

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("{slug}")
measured, gate, control = measure_example(results["estimate"].tolist(), results["control_estimate"].tolist(),
                                          n_samples, tolerance=0.05)
claims["example_claim"].evaluate(measured, gate=gate, control=control, detail=f"mu = {{mu}}")
pd.DataFrame([{{"claim": c.id, "value": c.measured.value, "verdict": c.verdict, "reason": c.reason}}
              for c in claims.values()])

# %% [markdown]
# ## Figure

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
sns.stripplot(data=results, y="estimate", ax=ax)
ax.axhline(mu, color="k", ls="--", label="true value")
ax.legend()
savefig(fig, out / "estimates.png")

# %%
results.to_csv(out / "per_seed.csv", index=False)
write_metrics(out, slug="{slug}", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline={{"mean_estimate": results["estimate"].mean()}},
              params=snapshot(globals(), "{slug}"))
'''

README = '''# [Re] {title}

{marker}: authors. *{title}.* venue, year. <{url}>. Code: (official repository, if any).

Fidelity grade **{grade}**: {marker}: one sentence on what the reduced scale can and cannot test.

```
papers run {slug}                   # the committed `small` run
papers run {slug} --profile smoke   # < 1 minute, proves the notebook runs
```

## Claims tested

Registered in [claims.yaml](claims.yaml) (kind, criterion, gate, control) and committed before the first
`small` run; `papers prereg {slug}` shows the commits. {marker}: one paragraph per claim on why its gate
and control make the verdict able to come out either way.

## Setup and deviations from the paper

{marker}: data, models, budgets per profile, and every deviation from the paper with its reason.

## Results

<!-- results:begin -->
<!-- results:end -->

## What was easy, what was hard

{marker}

## Compute

{marker}: what `smoke`, `small` and `full` cost, and where `full` was (or was not) run.
'''

BIBTEX = '''@misc{{{slug},
  author = {{{marker}: Surname, A. and Surname, B.}},
  title  = {{{title}}},
  year   = {{{marker}}},
  url    = {{{url}}}
}}
'''

TEST = '''"""papers.{slug}: {marker}: test the generators, losses and metrics against hand-computed cases."""

import pytest

from papers.{slug}.method import sample_mean


def test_sample_mean_is_deterministic_and_close():
    assert sample_mean(0.5, 10_000, seed=1) == sample_mean(0.5, 10_000, seed=1)
    assert sample_mean(0.5, 10_000, seed=1) == pytest.approx(0.5, abs=0.05)
'''


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 120
    return y


def _add_params_section(params_file: Path, slug: str) -> None:
    """Append the paper's section at the end of params.yaml; every other line stays byte for byte."""
    import io

    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    text = params_file.read_text()
    y = _yaml()
    if slug in (y.load(text) or {}):
        raise ScaffoldError(f"params.yaml already has a section {slug!r}")
    seeds = CommentedSeq([0, 1, 2])
    seeds.fa.set_flow_style()
    smoke_seeds = CommentedSeq([0])
    smoke_seeds.fa.set_flow_style()
    section = CommentedMap(seeds=seeds, mu=0.5, n_samples=2000)
    section["profiles"] = CommentedMap(small=CommentedMap(), smoke=CommentedMap(seeds=smoke_seeds, n_samples=100),
                                       full=CommentedMap(n_samples=100000))
    buf = io.StringIO()
    y.dump(CommentedMap({slug: section}), buf)
    params_file.write_text(text.rstrip("\n") + "\n\n" + buf.getvalue())


def _add_stage(dvc_file: Path, slug: str) -> None:
    from ruamel.yaml.comments import CommentedMap

    y = _yaml()
    data = y.load(dvc_file.read_text())
    stages = data["stages"]
    if slug in stages:
        raise ScaffoldError(f"dvc.yaml already has a stage {slug!r}")
    res = f"results/{slug}"
    stage = CommentedMap()
    stage["cmd"] = f"papers run {slug} --profile ${{profile}}"
    stage["deps"] = []  # filled by sync_stage_deps once the files exist
    stage["params"] = []  # filled by sync_stage_deps once params.yaml has the section
    stage["outs"] = [f"{res}/notebook.ipynb", CommentedMap({f"{res}/metrics.json": {"cache": False}}),
                     CommentedMap({f"{res}/per_seed.csv": {"cache": False}}),
                     CommentedMap({f"{res}/estimates.png": {"cache": False}})]
    stage["metrics"] = [CommentedMap({f"{res}/verdicts.json": {"cache": False}}),
                        CommentedMap({f"{res}/runtime.json": {"cache": False}})]
    # insert before the report stage, which must come last
    keys = list(stages)
    position = keys.index("report") if "report" in keys else len(keys)
    stages.insert(position, slug, stage)
    stages.yaml_set_comment_before_after_key(slug, before="\n", indent=2)
    if "report" in stages:
        report = stages["report"]
        report["deps"] += [f"papers/{slug}/claims.yaml", f"papers/{slug}/paper.bib", f"{res}/metrics.json",
                           f"{res}/runtime.json"]
        report["outs"].append(CommentedMap({f"papers/{slug}/README.md": {"cache": False, "persist": True}}))
    with open(dvc_file, "w") as fh:
        y.dump(data, fh)


def scaffold_paper(slug: str, title: str, url: str, grade: str = "B") -> list[Path]:
    """Create the paper's files and wire it into params.yaml and dvc.yaml; return the created paths."""
    if not SLUG_RE.match(slug) or keyword.iskeyword(slug):
        raise ScaffoldError(f"slug must be snake_case (a valid Python module name); got {slug!r}")
    if not url.startswith(("http://", "https://")):
        raise ScaffoldError(f"url must start with http(s)://; got {url!r}")
    root = paths.repo_root()
    pdir = root / "papers" / slug
    test_file = root / "tests" / f"test_{slug}.py"
    if pdir.exists() or test_file.exists():
        raise ScaffoldError(f"papers/{slug} or tests/test_{slug}.py already exists")
    fields = dict(slug=slug, title=title, url=url, grade=grade, marker=MARKER)
    files = {
        pdir / "__init__.py": INIT.format(**fields),
        pdir / "method.py": METHOD.format(**fields),
        pdir / "claims.yaml": REGISTRY.format(**fields),
        pdir / f"{slug}.nb.py": NOTEBOOK.format(**fields),
        pdir / "README.md": README.format(**fields),
        pdir / "paper.bib": BIBTEX.format(**fields),
        test_file: TEST.format(**fields),
    }
    import yaml

    if slug in (yaml.safe_load((root / "params.yaml").read_text()) or {}):
        raise ScaffoldError(f"params.yaml already has a section {slug!r}")
    if slug in (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {}):
        raise ScaffoldError(f"dvc.yaml already has a stage {slug!r}")
    _add_params_section(root / "params.yaml", slug)
    _add_stage(root / "dvc.yaml", slug)
    pdir.mkdir(parents=True)
    for path, text in files.items():
        path.write_text(text)
    sync_stage_deps(slug)
    return list(files)


def stage_params(slug: str) -> list[str]:
    """The params a paper's stage depends on: ``profile``, each base key of its section, and only the
    active profile's overrides (``<slug>.profiles.${profile}``), so that editing another profile leaves the
    stage up to date. Every section therefore lists ``small: {}`` among its profiles."""
    import yaml

    section = (yaml.safe_load((paths.repo_root() / "params.yaml").read_text()) or {}).get(slug) or {}
    base = [f"{slug}.{key}" for key in section if key != "profiles"]
    return ["profile", *base, f"{slug}.profiles.${{profile}}"]


ID_COLUMNS = ("seed",)  # numeric columns that identify a row rather than measure something


def plot_series(csv: Path, x: str) -> list[str]:
    """The y series of a curve table: every numeric column but ``x`` and the identifiers."""
    import pandas as pd

    frame = pd.read_csv(csv)
    return [c for c in frame.columns if c != x and c not in ID_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])]


def sync_plots(data: Any, slug: str) -> list[tuple[str, str, list[str]]]:
    """Declare every series of ``slug``'s curve tables in dvc.yaml's top-level ``plots`` (a stage-level plot
    takes one y column, so a multi-series CSV would show only its last column there). A stage-level plot
    entry (path with ``x``) moves to the stage's outs; the top-level entry gets ``x`` and every numeric
    column as ``y`` (from the CSV on disk; an absent CSV keeps its old y). Returns (path, x, y) rows."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    root = paths.repo_root()
    stage = data["stages"][slug]
    prefix = f"results/{slug}/"
    found: dict[str, CommentedMap] = {}
    for item in list(stage.get("plots", []) or []):
        if isinstance(item, dict):
            (path, props), = item.items()
            if props and "x" in props:
                found[path] = CommentedMap(x=props["x"], y=props.get("y"))
                stage["outs"].append(CommentedMap({path: CommentedMap(cache=False)}))
                stage["plots"].remove(item)
    if "plots" in stage and not stage["plots"]:
        del stage["plots"]
    top = data.get("plots")
    if top is None:
        top = data["plots"] = CommentedSeq()
    for item in list(top):
        (path, props), = item.items()
        if path.startswith(prefix):
            found.setdefault(path, CommentedMap(x=props["x"], y=props.get("y")))
            top.remove(item)
    rows = []
    for path in sorted(found):
        props = found[path]
        csv = root / path
        y = plot_series(csv, props["x"]) if csv.exists() else list(props.get("y") or [])
        ys = CommentedSeq(y)
        ys.fa.set_flow_style()
        entry = CommentedMap(x=props["x"])
        if y:
            entry["y"] = ys
        top.append(CommentedMap({path: entry}))
        rows.append((path, props["x"], y))
    return rows


def sync_stage_deps(slug: str) -> list[str]:
    """Set the code dependencies of ``slug``'s stage to the computed import closure
    (:func:`shared.deps.stage_code_deps`), keeping its other (data) dependencies, and its params to
    :func:`stage_params`; return the new dependency list."""
    from shared.deps import stage_code_deps

    root = paths.repo_root()
    dvc_file = root / "dvc.yaml"
    y = _yaml()
    data = y.load(dvc_file.read_text())
    stage = data["stages"][slug]
    code = stage_code_deps(slug)
    others = [d for d in stage.get("deps", []) if str(d).startswith("data/")]
    stage["deps"] = code + others
    stage["params"] = stage_params(slug)
    sync_plots(data, slug)
    with open(dvc_file, "w") as fh:
        y.dump(data, fh)
    return list(stage["deps"])
