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
function implements in its docstring.
"""

from __future__ import annotations

import numpy as np

from shared.metrics import Claim, Measurement
from shared.stats import seed_measurement

# Pre-registered claims: write them (statement, criterion, the paper's value) BEFORE the first run.
CLAIMS = {{
    "example_claim": dict(
        statement="{marker}: what the paper claims, in one sentence.",
        criterion="{marker}: the rule that decides the verdict, e.g. the mean over seeds of the sample mean "
                  "of N(mu, 1) lies within 0.05 of mu.",
        paper_value="{marker}: the paper's number and its setting",
    ),
}}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


def sample_mean(mu: float, n_samples: int, seed: int) -> float:
    """Mean of ``n_samples`` draws of N(mu, 1) from a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return float(rng.normal(mu, 1.0, size=n_samples).mean())


def decide_example(claim: Claim, estimates: list[float], mu: float, tolerance: float = 0.05) -> Claim:
    m: Measurement = seed_measurement(estimates, unit="estimate")
    verdict = "reproduced" if abs(m.value - mu) <= tolerance else "not_reproduced"
    return claim.decide(m, verdict, f"mean estimate {{m.value:.4f}} vs mu = {{mu}} (tolerance {{tolerance}})")
'''

NOTEBOOK = '''# %% [markdown]
# # {title}: replication
#
# [{url}]({url})
#
# {marker}: one paragraph on the paper and what this notebook tests. The claims and criteria are in
# `method.CLAIMS` and the README, fixed before the first run.

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
from papers.{slug}.method import decide_example, make_claims, sample_mean
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "{slug}")

# %% [markdown]
# ## Experiment

# %%
results = pd.DataFrame([{{"seed": s, "estimate": sample_mean(mu, n_samples, s)}} for s in seeds])
results

# %% [markdown]
# ## Verdicts

# %%
claims = {{c.id: c for c in make_claims()}}
decide_example(claims["example_claim"], results["estimate"].tolist(), mu)
pd.DataFrame([{{"claim": c.id, "value": c.measured.value, "verdict": c.verdict}} for c in claims.values()])

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

Pre-registered before the first `small` run (code of record: `CLAIMS` in [method.py](method.py)):

| id | claim (paper) | criterion |
|---|---|---|
| `example_claim` | {marker} | {marker} |

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
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    y = _yaml()
    data = y.load(params_file.read_text())
    if slug in data:
        raise ScaffoldError(f"params.yaml already has a section {slug!r}")
    seeds = CommentedSeq([0, 1, 2])
    seeds.fa.set_flow_style()
    smoke_seeds = CommentedSeq([0])
    smoke_seeds.fa.set_flow_style()
    section = CommentedMap(seeds=seeds, mu=0.5, n_samples=2000)
    section["profiles"] = CommentedMap(smoke=CommentedMap(seeds=smoke_seeds, n_samples=100),
                                       full=CommentedMap(n_samples=100000))
    data[slug] = section
    data.yaml_set_comment_before_after_key(slug, before="\n", indent=0)
    with open(params_file, "w") as fh:
        y.dump(data, fh)


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
    stage["params"] = ["profile", slug]
    stage["outs"] = [f"{res}/notebook.ipynb", CommentedMap({f"{res}/per_seed.csv": {"cache": False}}),
                     CommentedMap({f"{res}/estimates.png": {"cache": False}})]
    stage["metrics"] = [CommentedMap({f"{res}/metrics.json": {"cache": False}}),
                        CommentedMap({f"{res}/runtime.json": {"cache": False}})]
    # insert before the report stage, which must come last
    keys = list(stages)
    position = keys.index("report") if "report" in keys else len(keys)
    stages.insert(position, slug, stage)
    stages.yaml_set_comment_before_after_key(slug, before="\n", indent=2)
    if "report" in stages:
        report = stages["report"]
        report["deps"] += [f"{res}/metrics.json", f"{res}/runtime.json"]
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
        pdir / f"{slug}.nb.py": NOTEBOOK.format(**fields),
        pdir / "README.md": README.format(**fields),
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


def sync_stage_deps(slug: str) -> list[str]:
    """Set the code dependencies of ``slug``'s stage to the computed import closure
    (:func:`shared.deps.stage_code_deps`), keeping its other (data) dependencies; return the new list."""
    from shared.deps import stage_code_deps

    root = paths.repo_root()
    dvc_file = root / "dvc.yaml"
    y = _yaml()
    data = y.load(dvc_file.read_text())
    stage = data["stages"][slug]
    code = stage_code_deps(slug)
    others = [d for d in stage.get("deps", []) if str(d).startswith("data/")]
    stage["deps"] = code + others
    with open(dvc_file, "w") as fh:
        y.dump(data, fh)
    return list(stage["deps"])
