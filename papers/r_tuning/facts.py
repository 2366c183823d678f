"""Factual questions from the mirrored EREN CounterFact-Hard file, grouped into relation families.

The paper's ParaRel data are Wikidata (subject, relation, object) facts asked as questions, with 31
relation "domains": the first 15 give the training set and the in-domain (ID) test, the other 16 the
out-of-domain (OOD) test. CounterFact, from which ``cfh_filtered.json`` is derived, is built on the same
ParaRel/Wikidata relations, but the file carries no relation ids, so the relation is recovered from the
wording of each record's 13 questions (:data:`RELATION_RULES`, majority vote).

Only TRUE answers are used (the file's counterfactual edits are ignored): a record's ``edit_scope``
questions (paraphrases about the edited subject) are answered by ``edit_scope_true_ans`` and its
``neighbor_subj`` questions (other subjects with the same relation and object) by
``unrelated_true_ans["neighbor_subj"]``. The ``same_subj`` lists are not used: in this file their
questions and answers are not aligned (different lengths).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# (family, regex on the lower-cased question); the first match wins, so the specific patterns come first.
RELATION_RULES: tuple[tuple[str, str], ...] = (
    ("continent", r"continent"),
    ("sport_position", r"\bposition\b"),
    ("instrument", r"instrument"),
    ("sport", r"\bsports?\b"),
    ("religion", r"religio"),
    ("tv_network", r"network|channel|\bair(ed|s)?\b|premier|debut|broadcast|station"),
    ("twin_city", r"twin|sister city"),
    ("capital", r"capital"),
    ("language", r"language|speak|spoke|tongue|written in"),
    ("genre", r"genre|type of music|kind of music|music|type of"),
    ("owner", r"\bowns?\b|owned|owner"),
    ("manufacturer", r"develop|creat|produc|\bmakes?\b|\bmade\b|manufactur|company"),
    ("citizenship", r"citizen|nationality"),
    ("death_place", r"\bdie|death|pass(ed)? away"),
    ("birth_place", r"born|birth"),
    ("headquarters", r"headquarter|based"),
    ("work_location", r"\bwork|employ"),
    ("origin", r"found|formed|formulated|originat|\bfrom\b|native"),
    ("field_of_work", r"profession|occupation|field|domain|expertise|speciali[sz]|area of|discipline|job"),
    ("member_of", r"organi[sz]ation|member|affiliat|belong|group"),
    ("location", r"country|state|city|located|where is|where are|borough|region|province"),
)
OTHER = "other"


@dataclass(frozen=True)
class Fact:
    """One question with its true answer. ``record`` is the CounterFact case it comes from (all of a
    record's questions share the relation and the answer), ``kind`` is ``edit_scope`` or ``neighbor``."""

    question: str
    answer: str
    family: str
    record: int
    kind: str


def question_family(question: str) -> str:
    """The relation family of one question by :data:`RELATION_RULES` (``"other"`` if none matches)."""
    q = question.lower()
    for name, pattern in RELATION_RULES:
        if re.search(pattern, q):
            return name
    return OTHER


def record_family(questions: list[str]) -> str:
    """Majority family over a record's questions; ties go to the family listed first in the rules."""
    if not questions:
        return OTHER
    votes = Counter(question_family(q) for q in questions)
    order = {name: i for i, (name, _) in enumerate(RELATION_RULES)}
    order[OTHER] = len(order)
    return min(votes, key=lambda f: (-votes[f], order[f]))


def record_facts(record: dict) -> list[Fact]:
    """All (question, true answer) pairs of one ``cfh_filtered.json`` record, labelled by its family."""
    edit_q = [q for q, _new_answer in record["edit_scope"]]
    edit_a = list(record["edit_scope_true_ans"])
    neigh_q = list(record["unrelated"]["neighbor_subj"])
    neigh_a = list(record["unrelated_true_ans"]["neighbor_subj"])
    if len(edit_q) != len(edit_a) or len(neigh_q) != len(neigh_a):
        raise ValueError(f"record {record.get('id')}: questions and true answers are not aligned")
    family = record_family(edit_q + neigh_q)
    rid = int(record["id"])
    return ([Fact(q, a, family, rid, "edit_scope") for q, a in zip(edit_q, edit_a)]
            + [Fact(q, a, family, rid, "neighbor") for q, a in zip(neigh_q, neigh_a)])


def load_records(path: str | Path) -> list[dict]:
    records = json.loads(Path(path).read_text())
    if not isinstance(records, list) or not records or "edit_scope_true_ans" not in records[0]:
        raise ValueError(f"{path}: expected the EREN cfh_filtered.json array of edit records")
    return records


def families_by_size(records: list[dict]) -> list[tuple[str, int]]:
    """(family, number of records), largest first, ties by name; ``other`` is left out."""
    counts = Counter(record_family([q for q, _ in r["edit_scope"]] + r["unrelated"]["neighbor_subj"])
                     for r in records)
    counts.pop(OTHER, None)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def split_families(sizes: list[tuple[str, int]]) -> tuple[list[str], list[str]]:
    """ID and OOD families: alternate down the size-ordered list (1st, 3rd, ... -> ID; 2nd, 4th, ... ->
    OOD), a fixed rule that balances the two halves, like the paper's fixed 15/16 ParaRel domain split."""
    names = [f for f, _ in sizes]
    return names[0::2], names[1::2]


@dataclass
class FactSplit:
    train: list[Fact]
    test_id: list[Fact]
    test_ood: list[Fact]
    id_families: list[str]
    ood_families: list[str]


def make_split(records: list[dict], n_train: int, n_test_id: int, n_test_ood: int, train_per_record: int,
               seed: int) -> FactSplit:
    """Train / ID-test / OOD-test questions, disjoint by record (a test question never shares its case,
    hence its subject-object pair, with a training question).

    ID records are shuffled with ``seed``; the first ones give ``train_per_record`` questions each to the
    training set until it holds ``n_train``; the next ones give one question each to the ID test. OOD
    records (the held-out families) give one question each to the OOD test. Which questions of a record
    are taken is drawn with the same generator.
    """
    if min(n_train, n_test_id, n_test_ood, train_per_record) < 1:
        raise ValueError("n_train, n_test_id, n_test_ood and train_per_record must be >= 1")
    id_fams, ood_fams = split_families(families_by_size(records))
    rng = np.random.default_rng(seed)
    by_record = {int(r["id"]): record_facts(r) for r in records}
    id_records = sorted(rid for rid, fs in by_record.items() if fs and fs[0].family in id_fams)
    ood_records = sorted(rid for rid, fs in by_record.items() if fs and fs[0].family in ood_fams)
    id_order = [id_records[i] for i in rng.permutation(len(id_records))]
    ood_order = [ood_records[i] for i in rng.permutation(len(ood_records))]

    def take(rid: int, k: int) -> list[Fact]:
        facts = by_record[rid]
        return [facts[i] for i in sorted(rng.choice(len(facts), size=min(k, len(facts)), replace=False))]

    train: list[Fact] = []
    pos = 0
    while len(train) < n_train:
        if pos >= len(id_order):
            raise ValueError(f"not enough in-domain records for {n_train} training questions")
        train += take(id_order[pos], train_per_record)
        pos += 1
    train = train[:n_train]
    rest = id_order[pos:]
    if len(rest) < n_test_id:
        raise ValueError(f"only {len(rest)} in-domain records left for {n_test_id} ID test questions")
    if len(ood_order) < n_test_ood:
        raise ValueError(f"only {len(ood_order)} out-of-domain records for {n_test_ood} OOD test questions")
    test_id = [take(rid, 1)[0] for rid in rest[:n_test_id]]
    test_ood = [take(rid, 1)[0] for rid in ood_order[:n_test_ood]]
    return FactSplit(train, test_id, test_ood, id_fams, ood_fams)
