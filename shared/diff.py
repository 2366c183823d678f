"""``papers diff [A] [B]``: what a change did to the verdicts, for the reviewer of a pull request.

Compares each paper's ``results/<slug>/metrics.json`` between two revisions (default: the last commit and
the working tree) and reports, per paper, the claims whose verdict, value or interval changed (old -> new),
the claims added or removed, and the parameters of the run that changed. Numbers equal to 6 significant
digits (how ``metrics.json`` stores them) are equal.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from shared import paths

WORKSPACE = "workspace"


class DiffError(ValueError):
    """A revision cannot be read."""


def _git_show(rev: str, rel: str) -> str | None:
    res = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=paths.repo_root(), capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else None


def check_revision(rev: str) -> None:
    if rev == WORKSPACE:
        return
    res = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=paths.repo_root(),
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise DiffError(f"unknown revision {rev!r} (a commit, branch or tag; or 'workspace')")


def read_metrics(rev: str, slug: str) -> dict[str, Any] | None:
    rel = f"results/{slug}/metrics.json"
    if rev == WORKSPACE:
        path = paths.repo_root() / rel
        text = path.read_text() if path.exists() else None
    else:
        text = _git_show(rev, rel)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _interval(m: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    m = m or {}
    return m.get("value"), m.get("ci_low"), m.get("ci_high")


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _fmt_measured(m: dict[str, Any] | None) -> str:
    value, lo, hi = _interval(m)
    return _fmt(value) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else "")


@dataclass
class PaperDiff:
    slug: str
    lines: list[str] = field(default_factory=list)


def diff_paper(slug: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> PaperDiff:
    out = PaperDiff(slug)
    if old is None and new is None:
        return out
    if old is None:
        out.lines.append("results added")
        old = {"claims": [], "params": {}}
    if new is None:
        out.lines.append("results removed")
        new = {"claims": [], "params": {}}
    if old.get("profile") != new.get("profile") and old.get("profile") and new.get("profile"):
        out.lines.append(f"profile: {old['profile']} -> {new['profile']}")
    before = {c["id"]: c for c in old.get("claims", [])}
    after = {c["id"]: c for c in new.get("claims", [])}
    for cid, c in after.items():
        if cid not in before:
            out.lines.append(f"+ {cid}: {c['verdict']}, {_fmt_measured(c.get('measured'))} (new claim)")
            continue
        b = before[cid]
        changes = []
        if b["verdict"] != c["verdict"]:
            changes.append(f"verdict {b['verdict']} -> {c['verdict']}")
        if _interval(b.get("measured")) != _interval(c.get("measured")):
            changes.append(f"{_fmt_measured(b.get('measured'))} -> {_fmt_measured(c.get('measured'))}")
        for part in ("gate", "control"):
            old_part, new_part = (b.get(part) or {}), (c.get(part) or {})
            key = "passed" if part == "gate" else "meets_criterion"
            if old_part.get(key) != new_part.get(key):
                changes.append(f"{part} {_fmt(old_part.get(key))} -> {_fmt(new_part.get(key))}")
        if b.get("criterion") != c.get("criterion"):
            changes.append("criterion text changed")
        if changes:
            out.lines.append(f"~ {cid}: " + "; ".join(changes))
    for cid, b in before.items():
        if cid not in after:
            out.lines.append(f"- {cid}: was {b['verdict']}, {_fmt_measured(b.get('measured'))} (claim removed)")
    old_params, new_params = old.get("params", {}), new.get("params", {})
    for key in sorted(set(old_params) | set(new_params)):
        if old_params.get(key) != new_params.get(key):
            out.lines.append(f"param {key}: {_fmt(old_params.get(key, '(unset)'))} -> "
                             f"{_fmt(new_params.get(key, '(unset)'))}")
    return out


def diff(a: str = "HEAD", b: str = WORKSPACE, slugs: list[str] | None = None) -> list[PaperDiff]:
    check_revision(a)
    check_revision(b)
    return [diff_paper(slug, read_metrics(a, slug), read_metrics(b, slug)) for slug in slugs or paths.list_papers()]
