"""Results tables generated from ``results/*/metrics.json`` into the READMEs, between markers.

- ``README.md``: one row per claim of every paper, between ``<!-- results-table:begin -->`` and
  ``<!-- results-table:end -->``.
- ``papers/<slug>/README.md``: that paper's claims, criteria, headline numbers, figures and compute,
  between ``<!-- results:begin -->`` and ``<!-- results:end -->``.

Everything outside the markers is prose and is left alone. ``papers report --check`` (and a test) fail
when a table differs from what the metrics say, so a README can never show numbers the pipeline did not
write.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from shared import paths
from shared.claims import Rule
from shared.metrics import load_metrics

ROOT_MARKERS = ("<!-- results-table:begin -->", "<!-- results-table:end -->")
PAPER_MARKERS = ("<!-- results:begin -->", "<!-- results:end -->")
VERDICT_LABEL = {"reproduced": "reproduced", "not_reproduced": "**not reproduced**",
                 "inconclusive": "inconclusive", "passed": "passed", "failed": "**failed**"}
SMOKE_NOTE = " (smoke run: not meaningful)"
# A verdict decided by its interval's position is a close call when an end of the interval lies within
# this fraction of the interval's width of the rule's boundary: a shift that small (a fraction of a
# standard error, e.g. another seed or a change in float rounding) can move the verdict.
CLOSE_CALL = 0.1
# Wall-time budget of a profile run on a CPU like the reference machine's (2 cores, no GPU): the smoke
# profile must fit the test suite, `small` (the committed results) ten minutes. A GPU run and `full` have
# none. `tests/test_pipeline.py` holds every committed CPU result to it, and `papers run` warns when a
# run exceeds it.
CPU_BUDGET_S = {"smoke": 60, "small": 600}
# A paper allowed over its budget: profile -> (the most it may take, why). Each one is a decision written
# down here, shown next to the wall time in the paper's README, never a silent tolerance.
BUDGET_EXCEPTIONS: dict[str, dict[str, tuple[float, str]]] = {}


def fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.3g}" if abs(x) >= 1000 or abs(x) < 1e-3 else f"{x:#.4g}"


def fmt_measured(m: dict[str, Any] | None) -> str:
    if m is None:
        return "n/a"
    value = fmt(m["value"])
    if m["ci_low"] is None or m["ci_high"] is None:
        return value
    return f"{value} [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _runtime(slug: str) -> dict[str, Any]:
    path = paths.results_dir(slug) / "runtime.json"
    return json.loads(path.read_text()) if path.exists() else {}


def budget_status(slug: str, profile: str, device: str, wall_time_s: float) -> tuple[float | None, str]:
    """``(limit, note)`` of a run: the most it may take (None: no budget, e.g. a GPU run or ``full``) and
    a note for the reader, empty when the run is within the profile's own budget."""
    if device != "cpu" or profile not in CPU_BUDGET_S:
        return None, ""
    budget = CPU_BUDGET_S[profile]
    limit, why = BUDGET_EXCEPTIONS.get(slug, {}).get(profile, (budget, ""))
    if wall_time_s <= budget:
        return limit, ""
    over = f"over the {budget:.0f} s budget of `{profile}` on a 2-core CPU"
    return limit, f"{over}: allowed up to {limit:.0f} s because {why}" if why else over


def _metrics(slug: str) -> dict[str, Any] | None:
    path = paths.results_dir(slug) / "metrics.json"
    return load_metrics(path) if path.exists() else None


def gate_label(c: dict[str, Any]) -> str:
    passed = c["gate"]["passed"]
    return "none" if passed is None else ("passed" if passed else "**failed**")


def control_label(c: dict[str, Any]) -> str:
    meets = c["control"]["meets_criterion"]
    if c["control"]["measured"] is None:
        return "none"
    return "n/a" if meets is None else ("**meets it too**" if meets else "fails it")


def _margin(c: dict[str, Any]) -> tuple[float, float] | None:
    """(``Rule.margin`` of the claim's interval, the same as a fraction of the interval's width); None when
    the verdict was not decided by the interval's position (failed gate, no finite interval of positive
    width)."""
    m = c["measured"]
    if c["gate"]["passed"] is False or m["ci_low"] is None or m["ci_high"] is None:
        return None
    width = m["ci_high"] - m["ci_low"]
    margin = Rule(**c["rule"]).margin(m["ci_low"], m["ci_high"])
    return None if margin is None or not width > 0 else (margin, margin / width)


def relative_margin(c: dict[str, Any]) -> float | None:
    """The claim's margin as a fraction of its interval's width (see ``_margin``)."""
    m = _margin(c)
    return None if m is None else m[1]


def is_close_call(c: dict[str, Any]) -> bool:
    r = relative_margin(c)
    return r is not None and r < CLOSE_CALL


def verdict_label(c: dict[str, Any], profile: str) -> str:
    return (VERDICT_LABEL[c["verdict"]] + (" (close call)" if is_close_call(c) else "")
            + (SMOKE_NOTE if profile == "smoke" else ""))


def margin_note(c: dict[str, Any]) -> str:
    """One sentence for the evidence line: how far the interval is from the boundary that decided it."""
    m = _margin(c)
    if m is None:
        return ""
    margin, r = m
    share = f"{r:.0%}" if r >= 0.01 else f"{r:.1%}"
    note = f" Margin: the interval is {fmt(margin)} from the rule's nearest boundary, {share} of its width"
    if r < CLOSE_CALL:
        note += (f"; a close call (under {CLOSE_CALL:.0%}): a shift of a fraction of a standard error, such as "
                 "another set of seeds, can change the verdict")
    return note + "."


def prereg_status(slugs: list[str] | None = None) -> dict[tuple[str, str], str]:
    """(slug, claim) -> "yes (abc1234)" / "no" / ... from git (see shared.prereg)."""
    from shared.prereg import prereg

    out = {}
    for r in prereg(slugs):
        out[(r.slug, r.claim)] = f"yes ({r.text_since[:7]})" if r.status == "yes" else r.status
    return out


def tally(claims: list[dict[str, Any]]) -> dict[str, int]:
    counts = {v: 0 for v in VERDICT_LABEL}
    for c in claims:
        counts[c["verdict"]] += 1
    return counts


def summary_line(claims: list[dict[str, Any]]) -> str:
    """"N replication claims: r reproduced, n not reproduced, i inconclusive; M checks: p passed, f failed",
    then how many verdicts are close calls, when any is."""
    reps = [c for c in claims if c["kind"] == "replication"]
    checks = [c for c in claims if c["kind"] == "check"]
    t = tally(claims)
    close = sum(is_close_call(c) for c in claims)
    return (f"{len(reps)} replication claims: {t['reproduced']} reproduced, {t['not_reproduced']} not "
            f"reproduced, {t['inconclusive']} inconclusive; {len(checks)} checks: {t['passed']} passed, "
            f"{t['failed']} failed" + (f"; {close} close call{'s' if close != 1 else ''}" if close else ""))


def _evidence(slug: str, cid: str, from_root: bool) -> str:
    base = f"papers/{slug}/README.md" if from_root else "README.md"
    return f"[evidence]({base}#claim-{cid.replace('_', '-')})"


def root_table() -> str:
    rep = ["| paper | claim | paper's value | ours (95% CI) | unit | gate | control | verdict | pre-registered "
           "| profile |", "|---|---|---|---|---|---|---|---|---|---|"]
    chk = ["| paper | check | ours (95% CI) | unit | verdict | profile |", "|---|---|---|---|---|---|"]
    everything: list[dict[str, Any]] = []
    status = prereg_status()
    for slug in paths.list_papers():
        metrics = _metrics(slug)
        link = f"[{slug}](papers/{slug}/README.md)"
        if metrics is None:
            rep.append(f"| {link} | (not run yet) | | | | | | | | |")
            continue
        profile = metrics["profile"]
        for c in metrics["claims"]:
            everything.append(c)
            claim = f"{_cell(c['id'])} ({_evidence(slug, c['id'], True)})"
            unit = _cell(c["measured"]["unit"])
            if c["kind"] == "check":
                chk.append(f"| {link} | {claim} | {fmt_measured(c['measured'])} | {unit} | "
                           f"{verdict_label(c, profile)} | {profile} |")
            else:
                rep.append(f"| {link} | {claim} | {_cell(c['paper_value'])} | {fmt_measured(c['measured'])} | "
                           f"{unit} | {gate_label(c)} | {control_label(c)} | {verdict_label(c, profile)} | "
                           f"{status.get((slug, c['id']), 'unknown')} | {profile} |")
    return "\n".join([f"**{summary_line(everything)}.** Gate: whether the experiment could test the claim "
                      "(failed: inconclusive). Control: the same criterion on an arm without the effect "
                      "(meets it too: inconclusive). Close call: an end of the interval lies within "
                      f"{CLOSE_CALL:.0%} of the interval's width of the criterion's boundary, so a small shift "
                      "(another set of seeds) can change the verdict. Pre-registered: the claim's text was "
                      "committed before its first results (`papers prereg`).", "", "Replication claims:", "", *rep, "",
                      "Checks (identities, theorems verified numerically, sanity and manipulation checks; "
                      "never counted as reproductions):", "", *chk])


def paper_block(slug: str) -> str:
    metrics = _metrics(slug)
    if metrics is None:
        return f"_No results yet: run `papers run {slug}` or `dvc repro {slug}`._"
    runtime = _runtime(slug)
    profile = metrics["profile"]
    wall = ""
    if "wall_time_s" in runtime:
        note = budget_status(slug, profile, metrics["device"], runtime["wall_time_s"])[1]
        wall = f"; wall time {runtime['wall_time_s']:.0f} s{', ' + note if note else ''}"
    seeds = ", ".join(str(s) for s in metrics["seeds"])
    status = prereg_status([slug])
    out = [f"_Generated by `papers report` from `results/{slug}/metrics.json` (profile "
           f"`{profile}`, device `{metrics['device']}`, seeds {seeds}{wall}; claim registry "
           f"[claims.yaml](claims.yaml)). Do not edit by hand._",
           "", f"**{summary_line(metrics['claims'])}.**", "",
           "| claim | kind | paper | ours (95% CI) | unit | gate | control | verdict | pre-registered |",
           "|---|---|---|---|---|---|---|---|---|"]
    for c in metrics["claims"]:
        out.append(f"| **{c['id']}**: {_cell(c['statement'])} | {c['kind']} | {_cell(c['paper_value'])} | "
                   f"{fmt_measured(c['measured'])} | {_cell(c['measured']['unit'])} | {gate_label(c)} | "
                   f"{control_label(c)} | {verdict_label(c, profile)} | "
                   f"{status.get((slug, c['id']), 'unknown')} |")
    out += ["", "How each verdict was decided (criterion, gate, control, then what was measured):", ""]
    for c in metrics["claims"]:
        m, g, ctrl = c["measured"], c["gate"], c["control"]
        gate = (f"Gate: {g['condition']} -> {'passed' if g['passed'] else 'failed'} ({g['detail']})."
                if g["passed"] is not None else f"Gate: {g['condition']}.")
        control = (f"Control: {ctrl['arm']} -> {fmt_measured(ctrl['measured'])}"
                   f"{', meets the criterion too' if ctrl['meets_criterion'] else ''}"
                   f"{' (' + ctrl['detail'] + ')' if ctrl['detail'] else ''}."
                   if ctrl["measured"] is not None else f"Control: {ctrl['arm']}.")
        out.append(f"- <a id=\"claim-{c['id'].replace('_', '-')}\"></a>**{c['id']}** ({c['kind']}, "
                   f"{verdict_label(c, profile)}; source: {_cell(c['source'])}). Criterion: {c['criterion']} "
                   f"{gate} {control} Measured ({c['metric']}): {fmt_measured(m)} {m['unit']} "
                   f"({m['method']}, n = {m['n']}). Verdict: {c['reason']}.{margin_note(c)} "
                   f"{c['detail']}".rstrip())
    if metrics["headline"]:
        out += ["", "| headline number | value |", "|---|---|"]
        out += [f"| {_cell(k)} | {fmt(v) if isinstance(v, (int, float)) else _cell(str(v))} |"
                for k, v in metrics["headline"].items()]
    figures = sorted(paths.results_dir(slug).glob("*.png"))
    for fig in figures:
        out += ["", f"![{fig.stem}](../../results/{slug}/{fig.name})"]
    bib = paths.paper_dir(slug) / "paper.bib"
    if bib.exists():
        out += ["", "The replicated paper ([paper.bib](paper.bib)):", "", "```bibtex", bib.read_text().strip(), "```"]
    return "\n".join(out)


def _splice(text: str, markers: tuple[str, str], block: str, where: Path) -> str:
    begin, end = markers
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{where}: missing the markers {begin} ... {end}")
    return pattern.sub(lambda _: f"{begin}\n{block}\n{end}", text, count=1)


TITLE_RE = re.compile(r"^# \[(Re|¬Re)\] ")


def title_tag(metrics: dict[str, Any] | None) -> str:
    """ReScience's convention: ``[¬Re]`` for a failed replication (no replication claim reproduced and at
    least one not reproduced), ``[Re]`` otherwise (including papers with only checks or only inconclusive)."""
    if metrics is None:
        return "Re"
    verdicts = [c["verdict"] for c in metrics["claims"] if c["kind"] == "replication"]
    return "¬Re" if "not_reproduced" in verdicts and "reproduced" not in verdicts else "Re"


def _retitle(text: str, tag: str) -> str:
    first, sep, rest = text.partition("\n")
    return (TITLE_RE.sub(f"# [{tag}] ", first, count=1) + sep + rest) if TITLE_RE.match(first) else text


def rendered() -> dict[Path, str]:
    """Every README the report owns, with its generated block filled in (and a paper README's title tag)."""
    root = paths.repo_root()
    out: dict[Path, str] = {}
    readme = root / "README.md"
    out[readme] = _splice(readme.read_text(), ROOT_MARKERS, root_table(), readme)
    for slug in paths.list_papers():
        path = paths.paper_dir(slug) / "README.md"
        text = _retitle(path.read_text(), title_tag(_metrics(slug)))
        out[path] = _splice(text, PAPER_MARKERS, paper_block(slug), path)
    return out


def write_report() -> list[Path]:
    changed = []
    for path, text in rendered().items():
        if path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def check_report() -> list[Path]:
    """The READMEs whose generated block differs from the metrics (empty when all are current)."""
    return [path for path, text in rendered().items() if path.read_text() != text]

