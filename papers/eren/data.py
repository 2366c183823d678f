"""CounterFact-Hard (CFH): the edits, their notes and the questions each seed evaluates.

The file is the authors' ``data/cfh_filtered.json`` (thunlp/EREN; fetched by the stage ``data_eren``): 1,024
edit records, each with an ``edit_statement`` ("Danielle Darrieux's mother tongue is English."), the in-scope
questions ``edit_scope`` as ``[question, new_answer]`` pairs (paraphrases of the edited fact), and two kinds of
unrelated questions that the edit must not change (Sec. 4 of the paper, "CounterFact-Hard"):

- ``neighbor_subj``: the same relation about neighbouring subjects ("What is Leon Blum's mother tongue?");
- ``same_subj``: other relations of the *same* subject ("Where did Danielle Darrieux die?") - the hard case
  CFH adds to CounterFact: the retriever finds the edit's note, and the reader must not use it.

Following the authors' ``MipsRetriever``/``Eren.edit_by_statements``, a note is the edit statement without its
final period, and notes are joined with ".\\n" and closed with "." to form the reading context.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

QUESTION_KINDS = ("scope", "neighbor_subj", "same_subj")  # in-scope (ES), and the two unrelated kinds (BP)
PERMUTATION_SEED = 20240326  # fixed shuffle of the eligible edits; seed s evaluates block s of it


def load_cfh(path: str | Path) -> list[dict]:
    """The CFH records, checked for the fields this replication reads."""
    records = json.loads(Path(path).read_text())
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON array of edit records")
    for key in ("id", "edit_statement", "edit_scope", "unrelated"):
        if key not in records[0]:
            raise ValueError(f"{path}: edit records have no field {key!r}")
    return records


def note_of(statement: str) -> str:
    """The note stored for an edit: the statement without its final period (authors' ``edit_by_statements``)."""
    statement = statement.strip()
    return statement[:-1] if statement.endswith(".") else statement


def make_context(notes: list[str]) -> str:
    """Reading context from retrieved notes, most similar first: joined with ".\\n", closed with "."."""
    if not notes:
        raise ValueError("a context needs at least one note")
    return ".\n".join(notes) + "."


def eligible_edits(records: list[dict]) -> list[int]:
    """Indices of the edits that can be evaluated on all three question kinds: at least one in-scope question
    and at least one same-subject question (189 of the 1,024 CFH edits have none; 8 have no in-scope one)."""
    return [i for i, r in enumerate(records)
            if r["edit_scope"] and r["unrelated"].get("same_subj") and r["unrelated"].get("neighbor_subj")]


def edit_block(n_eligible: int, seed: int, n_edits: int) -> np.ndarray:
    """Positions (into the eligible list) of the ``n_edits`` edits that seed ``seed`` evaluates: block ``seed``
    of a fixed permutation, so distinct seeds evaluate disjoint sets of edits."""
    if n_edits < 1 or seed < 0:
        raise ValueError(f"need n_edits >= 1 and seed >= 0; got n_edits={n_edits}, seed={seed}")
    if (seed + 1) * n_edits > n_eligible:
        raise ValueError(f"seed {seed} with {n_edits} edits per seed needs {(seed + 1) * n_edits} eligible edits; "
                         f"only {n_eligible} exist")
    perm = np.random.default_rng(PERMUTATION_SEED).permutation(n_eligible)
    return perm[seed * n_edits:(seed + 1) * n_edits]


def _sample_unique(questions: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Up to ``n`` distinct questions in a seeded random order (CFH lists repeat some questions)."""
    unique = list(dict.fromkeys(questions))
    if len(unique) <= n:
        return unique
    return [unique[j] for j in sorted(rng.choice(len(unique), size=n, replace=False))]


def build_questions(records: list[dict], edit_ids: list[int], n_scope: int, n_neighbor: int, n_same: int,
                    seed: int) -> pd.DataFrame:
    """One row per evaluated question: ``seed, edit_id, kind, question, target, note``.

    ``target`` is the edit's new answer for in-scope questions (edit success) and empty for unrelated ones
    (behaviour preservation is measured against the unedited model's own output, not a reference answer).
    Each edit contributes its first ``n_scope`` in-scope questions (the first is the one the fine-tuning
    editor trains on, as in the authors' ``get_edit_examples``) and random samples of ``n_neighbor`` and
    ``n_same`` distinct unrelated questions.
    """
    rng = np.random.default_rng([seed, PERMUTATION_SEED])
    rows = []
    for eid in edit_ids:
        r = records[eid]
        note = note_of(r["edit_statement"])
        for q, a in r["edit_scope"][:n_scope]:
            rows.append(dict(seed=seed, edit_id=int(r["id"]), kind="scope", question=q, target=a, note=note))
        for kind, n in (("neighbor_subj", n_neighbor), ("same_subj", n_same)):
            for q in _sample_unique(r["unrelated"][kind], n, rng):
                rows.append(dict(seed=seed, edit_id=int(r["id"]), kind=kind, question=q, target="", note=note))
    return pd.DataFrame(rows, columns=["seed", "edit_id", "kind", "question", "target", "note"])
