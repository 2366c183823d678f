"""Pre-registration read from git: was each claim's current text committed before its first results?

For every claim in ``papers/<slug>/claims.yaml`` (as on disk):

- ``registered``: the first commit whose registry holds the claim's id;
- ``text_since``: the commit from which the entry has its current text (its last change);
- ``first_results``: the first commit whose ``results/<slug>/metrics.json`` holds the id;
- ``status``:
  - ``yes``: the current text was committed in a commit that is a strict ancestor of the first results
    commit (or, for results not committed yet, the runner recorded in ``runtime.json`` that the registry
    was committed unchanged when the run started, in a commit that descends from ``text_since``);
  - ``no``: registered in the same commit as the first results or after them, or changed since;
  - ``uncommitted``: the entry on disk differs from the committed one;
  - ``not run``: no results hold the claim yet.

It only reads git; it is an honest record, not a gate: ``no`` is shown, never raised as an error.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared import paths
from shared.claims import REGISTRY_NAME, entry_fingerprint


@dataclass(frozen=True)
class PreregRow:
    slug: str
    claim: str
    registered: str | None
    text_since: str | None
    first_results: str | None
    status: str
    note: str


class _Git:
    def __init__(self, root: Path):
        self.root = root
        self._ancestor: dict[tuple[str, str], bool] = {}

    def run(self, *args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout if res.returncode == 0 else None

    def commits(self, path: str) -> list[str]:
        """Commits that changed ``path``, oldest first (the history of HEAD)."""
        out = self.run("log", "--format=%H", "--reverse", "--", path)
        return out.split() if out else []

    def show(self, commit: str, path: str) -> str | None:
        return self.run("show", f"{commit}:{path}")

    def is_ancestor(self, a: str, b: str) -> bool:
        key = (a, b)
        if key not in self._ancestor:
            try:
                res = subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=self.root,
                                     capture_output=True, timeout=60)
                self._ancestor[key] = res.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                self._ancestor[key] = False
        return self._ancestor[key]


def _entries(text: str | None) -> dict[str, str]:
    """id -> fingerprint of each registry entry in ``text`` (empty when unreadable)."""
    if not text:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    claims = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(claims, list):
        return {}
    return {e["id"]: entry_fingerprint(e) for e in claims if isinstance(e, dict) and isinstance(e.get("id"), str)}


def _result_ids(text: str | None) -> set[str]:
    if not text:
        return set()
    try:
        return {c["id"] for c in json.loads(text).get("claims", []) if isinstance(c, dict) and "id" in c}
    except (ValueError, AttributeError, TypeError):
        return set()


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def paper_prereg(slug: str, git: _Git | None = None) -> list[PreregRow]:
    root = paths.repo_root()
    git = git or _Git(root)
    reg_rel = f"papers/{slug}/{REGISTRY_NAME}"
    res_rel = f"results/{slug}/metrics.json"
    reg_file = root / reg_rel
    if not reg_file.exists():
        return []
    current = _entries(reg_file.read_text())
    history = [(c, _entries(git.show(c, reg_rel))) for c in git.commits(reg_rel)]
    head_entries = history[-1][1] if history else {}
    results = [(c, _result_ids(git.show(c, res_rel))) for c in git.commits(res_rel)]
    disk_results = _result_ids((root / res_rel).read_text()) if (root / res_rel).exists() else set()
    runtime = _load_json(root / "results" / slug / "runtime.json").get("registry") or {}

    rows = []
    for cid, fp in current.items():
        registered = next((c for c, e in history if cid in e), None)
        text_since = None
        for c, e in history:  # the commit after which the entry kept its current text
            if e.get(cid) == fp:
                text_since = text_since or c
            else:
                text_since = None
        first_results = next((c for c, ids in results if cid in ids), None)
        short = (lambda c: c[:7] if c else None)
        if head_entries.get(cid) != fp:
            status, note = "uncommitted", "the registry entry on disk differs from the committed one"
        elif first_results is not None:
            if registered is None or text_since is None:
                status, note = "no", "results were committed before the registry held the claim"
            elif text_since != first_results and git.is_ancestor(text_since, first_results):
                status, note = "yes", f"registered in {short(text_since)}, before the first results {short(first_results)}"
            elif text_since == first_results:
                status, note = "no", f"registered in the same commit as its first results ({short(first_results)})"
            else:
                status, note = "no", (f"the current text ({short(text_since)}) came after the first results "
                                      f"({short(first_results)})")
        elif cid in disk_results:
            head = runtime.get("head")
            if runtime.get("committed") and head and text_since and git.is_ancestor(text_since, head):
                status, note = "yes", (f"registered in {short(text_since)}; the run started on {short(head)} "
                                       "with the registry committed (results not committed yet)")
            else:
                status, note = "no", "the run started with the registry not committed"
        else:
            status, note = "not run", "no results hold this claim yet"
        rows.append(PreregRow(slug, cid, registered, text_since, first_results, status, note))
    return rows


def prereg(slugs: list[str] | None = None) -> list[PreregRow]:
    git = _Git(paths.repo_root())
    rows: list[PreregRow] = []
    for slug in slugs or paths.list_papers():
        rows += paper_prereg(slug, git)
    return rows
