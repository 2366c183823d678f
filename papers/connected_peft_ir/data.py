"""A small first-stage retrieval task built offline from CounterFact-Hard (thunlp/EREN ``cfh_filtered.json``).

The paper (Ma et al. 2022, Sec. 5) fine-tunes dense retrievers on MS MARCO; nothing of that size can be
fetched or trained here, so the task is a home-made proxy: **duplicate-question retrieval over entity
facts**. For every subject with at least two distinct paraphrased ``edit_scope`` questions:

- the *positive passage* is the first paraphrase ("What is the mother tongue of X?");
- the *queries* are the other paraphrases (one or two: "What language did X speak?", ...);
- the subject's *hard negatives* are its ``same_subj`` questions (same entity, other relation) and its
  ``neighbor_subj`` questions (same relation, other entities), minus any text equal to one of its
  paraphrases.

Every passage is a question, so no surface format separates the positive from the negatives. Subjects are
split once (``split_seed``) into disjoint train / validation / test sets, so every test query asks about an
entity never seen in training. The test corpus is every passage of every test subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Subject:
    name: str
    positive: str  # the passage to retrieve
    queries: list[str]  # the paraphrases that ask for it
    negatives: list[str]  # hard negatives (same entity other relation; same relation other entity)


@dataclass
class Corpus:
    """A retrieval test set: ``passages`` (N,), ``queries`` (Q,) and ``relevant[q]`` the index of query
    q's one relevant passage."""

    passages: list[str]
    queries: list[str]
    relevant: list[int] = field(default_factory=list)


def subjects_from_rows(rows: list[dict]) -> list[Subject]:
    """One :class:`Subject` per CounterFact-Hard row with at least two distinct edit_scope paraphrases
    (the first is the passage, the others the queries) and at least one hard negative; the first row per
    subject name only (a few names repeat)."""
    seen: set[str] = set()
    out: list[Subject] = []
    for r in rows:
        scope = list(dict.fromkeys(q for q, _ in r.get("edit_scope", [])))  # distinct paraphrases
        name = r["subject_name"]
        if len(scope) < 2 or name in seen:
            continue
        seen.add(name)
        unrelated = r.get("unrelated", {})
        negs = list(dict.fromkeys(unrelated.get("same_subj", []) + unrelated.get("neighbor_subj", [])))
        negs = [n for n in negs if n not in scope]
        if not negs:
            continue
        out.append(Subject(name=name, positive=scope[0], queries=scope[1:], negatives=negs))
    return out


def load_subjects() -> list[Subject]:
    """The subjects of ``data/eren/cfh_filtered.json`` (stage ``data_eren``)."""
    from shared.data import require

    with open(require("eren", "cfh_filtered.json")) as f:
        return subjects_from_rows(json.load(f))


def split_subjects(subjects: list[Subject], n_val: int, n_test: int, split_seed: int,
                   n_train: int | None = None) -> tuple[list[Subject], list[Subject], list[Subject]]:
    """Disjoint (train, val, test) subject lists from one fixed permutation; ``n_train`` caps the train
    set (None: all the rest)."""
    if n_val + n_test >= len(subjects):
        raise ValueError(f"n_val + n_test = {n_val + n_test} leaves no training subjects of {len(subjects)}")
    order = np.random.default_rng(split_seed).permutation(len(subjects))
    test = [subjects[i] for i in order[:n_test]]
    val = [subjects[i] for i in order[n_test:n_test + n_val]]
    train = [subjects[i] for i in order[n_test + n_val:]]
    if n_train is not None:
        train = train[:n_train]
    return train, val, test


def build_corpus(subjects: list[Subject]) -> Corpus:
    """Every positive and negative of ``subjects`` as one passage pool (duplicate texts kept once, texts
    equal to a query dropped) and every query with the index of its positive."""
    index: dict[str, int] = {}
    passages: list[str] = []

    def add(text: str) -> int:
        if text not in index:
            index[text] = len(passages)
            passages.append(text)
        return index[text]

    queries, relevant = [], []
    query_texts = {q for s in subjects for q in s.queries}
    for s in subjects:
        pos = add(s.positive)
        for n in s.negatives:
            if n not in query_texts:  # a verbatim copy of another subject's query would be a free hit
                add(n)
        for q in s.queries:
            queries.append(q)
            relevant.append(pos)
    return Corpus(passages, queries, relevant)


def sample_batch(subjects: list[Subject], batch_size: int, rng: np.random.Generator
                 ) -> tuple[list[str], list[str], list[str]]:
    """(queries, positives, hard negatives), one triple per subject for ``batch_size`` distinct subjects,
    each with a uniformly drawn query paraphrase and hard negative (so in-batch positives are distinct)."""
    if batch_size > len(subjects):
        raise ValueError(f"batch_size {batch_size} > {len(subjects)} subjects")
    idx = rng.choice(len(subjects), size=batch_size, replace=False)
    q, p, n = [], [], []
    for i in idx:
        s = subjects[i]
        q.append(s.queries[rng.integers(len(s.queries))])
        p.append(s.positive)
        n.append(s.negatives[rng.integers(len(s.negatives))])
    return q, p, n
