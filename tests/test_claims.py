"""The claim registry and the shared verdict rule (shared.claims): every branch of the rule, registry
validation with one-line errors, and the metrics record that refuses a hand-written verdict."""

from __future__ import annotations

import json

import pytest

from shared.claims import (Control, Gate, RegistryError, Rule, evaluate_registered, flat_verdicts,
                           parse_registry, verdict_rule)
from shared.metrics import Measurement, MetricsError, build_metrics, validate_metrics

ENTRY = """
claims:
  - id: gap
    kind: replication
    statement: The method beats the baseline.
    source: Sec. 4, Table 2
    paper_value: "+3 pp"
    metric: method minus baseline accuracy, per seed
    unit: accuracy difference
    direction: greater
    null_value: 0
    smallest_effect: 0.01
    criterion: t interval over seeds above 0.01
    gate: the method reaches 0.9 held-out accuracy in every seed
    control: the baseline against itself under other seeds (A/A)
  - id: identity
    kind: check
    statement: An identity holds to rounding.
    source: Eq. 3
    paper_value: proved
    metric: largest error / rounding bound
    unit: ratio
    direction: less
    null_value: 1
    smallest_effect: 0
    criterion: every per-seed worst ratio below 1
    gate: "none: an identity needs no trained model"
    control: "none: nothing to compare"
"""


def m(lo, hi, value=None):
    value = (lo + hi) / 2 if value is None and lo is not None else value
    return Measurement(value=value, ci_low=lo, ci_high=hi, n=3, method="t interval over 3 seeds")


GREATER = Rule("greater", null_value=0.0, smallest_effect=0.01)  # boundary 0.01
PASS, FAIL = Gate(True, "learned"), Gate(False, "accuracy 0.55 < 0.9")
NULL_CONTROL = Control(m(-0.01, 0.005), "A/A")


@pytest.mark.parametrize("interval, gate, control, verdict, reason", [
    ((0.02, 0.05), PASS, NULL_CONTROL, "reproduced", "meets the criterion"),
    ((0.02, 0.05), None, None, "reproduced", "meets the criterion"),
    ((-0.05, 0.005), PASS, NULL_CONTROL, "not_reproduced", "falls short"),
    ((0.0, 0.03), PASS, NULL_CONTROL, "inconclusive", "straddles"),
    ((0.005, 0.009), PASS, NULL_CONTROL, "not_reproduced", "falls short"),  # significant but trivial
    ((0.02, 0.05), FAIL, NULL_CONTROL, "inconclusive", "gate failed: accuracy 0.55"),
    ((-0.05, -0.02), FAIL, NULL_CONTROL, "inconclusive", "gate failed"),  # never not_reproduced
    ((0.02, 0.05), PASS, Control(m(0.015, 0.04), "shuffled labels"), "inconclusive", "does not discriminate"),
    ((0.02, 0.05), PASS, Control(m(None, None, 0.03), "const"), "inconclusive", "control could not"),
    ((None, None), PASS, NULL_CONTROL, "inconclusive", "no interval"),
])
def test_replication_rule_branches(interval, gate, control, verdict, reason):
    got, why, _ = verdict_rule("replication", GREATER, m(*interval), gate, control)
    assert got == verdict
    assert reason in why


def test_check_rule_maps_to_passed_failed():
    assert verdict_rule("check", GREATER, m(0.02, 0.05))[0] == "passed"
    for interval in [(-0.05, 0.0), (0.0, 0.03), (None, None)]:
        assert verdict_rule("check", GREATER, m(*interval))[0] == "failed"
    assert verdict_rule("check", GREATER, m(0.02, 0.05), FAIL)[0] == "failed"


def test_rule_positions_by_direction():
    less = Rule("less", null_value=1.0, smallest_effect=0.0)
    assert less.boundary == 1.0
    assert less.position(0.2, 0.9) == "beyond"
    assert less.position(1.1, 2.0) == "short"
    assert less.position(0.9, 1.1) == "straddles"
    within = Rule("within", target=0.5, tolerance=0.05)
    assert within.band == (0.45, 0.55)
    assert within.position(0.46, 0.54) == "beyond"
    assert within.position(0.56, 0.7) == "short"
    assert within.position(0.3, 0.44) == "short"
    assert within.position(0.5, 0.6) == "straddles"
    assert GREATER.position(float("nan"), 1.0) == "missing"
    with pytest.raises(ValueError):
        GREATER.position(0.5, 0.1)


def test_rule_margin_is_the_shift_that_would_change_the_position():
    greater = Rule("greater", null_value=0.0, smallest_effect=0.1)  # boundary 0.1
    assert greater.margin(0.25, 0.9) == pytest.approx(0.15)  # the nearer end is 0.25 - 0.1 away
    assert greater.margin(-0.5, 0.08) == pytest.approx(0.02)  # short by 0.02
    assert greater.margin(0.05, 0.6) == pytest.approx(0.05)  # straddles: the low end is 0.05 below
    less = Rule("less", null_value=1.0, smallest_effect=0.0)
    assert less.margin(0.2, 0.9) == pytest.approx(0.1)
    within = Rule("within", target=0.5, tolerance=0.05)  # band [0.45, 0.55]
    assert within.margin(0.46, 0.54) == pytest.approx(0.01)
    assert within.margin(0.3, 0.44) == pytest.approx(0.01)  # short: 0.44 is 0.01 below the band
    assert within.margin(0.2, 0.9) == pytest.approx(0.25)  # straddles both edges
    assert GREATER.margin(None, 1.0) is None and GREATER.margin(float("inf"), 1.0) is None
    # moving either end by less than the margin never changes the position; by more, it can
    for rule, lo, hi in [(greater, 0.25, 0.9), (less, 0.2, 0.9), (within, 0.3, 0.44), (within, 0.46, 0.54)]:
        d = rule.margin(lo, hi)
        for dl, dh in [(0.99 * d, 0), (-0.99 * d, 0), (0, 0.99 * d), (0, -0.99 * d)]:
            assert rule.position(lo + dl, hi + dh) == rule.position(lo, hi)
        assert any(rule.position(lo + dl, hi + dh) != rule.position(lo, hi)
                   for dl, dh in [(1.01 * d, 0), (-1.01 * d, 0), (0, 1.01 * d), (0, -1.01 * d)])


def test_point_estimate_alone_never_decides():
    # a value far beyond the boundary with an interval that straddles it is not reproduced
    got, _, _ = verdict_rule("replication", GREATER, m(-0.5, 1.5, value=0.9), PASS, NULL_CONTROL)
    assert got == "inconclusive"


def test_parse_registry_and_evaluate():
    claims = {c.id: c for c in parse_registry(ENTRY)}
    gap, ident = claims["gap"], claims["identity"]
    assert (gap.kind, gap.has_gate, gap.has_control) == ("replication", True, True)
    assert (ident.kind, ident.has_gate, ident.has_control) == ("check", False, False)
    gap.evaluate(m(0.02, 0.05), gate=PASS, control=NULL_CONTROL, detail="3 seeds")
    assert gap.verdict == "reproduced" and gap.measured.unit == "accuracy difference"
    ident.evaluate(m(0.1, 0.4))
    assert ident.verdict == "passed"
    rec = gap.record()
    assert rec["gate"] == {"condition": gap.gate_condition, "passed": True, "value": None, "detail": "learned"}
    assert rec["control"]["meets_criterion"] is False
    flat = flat_verdicts([rec, ident.record()])
    assert flat["gap"]["verdict"] == 1 and flat["identity"]["verdict"] == 1
    assert flat["gap"]["control_value"] == pytest.approx(-0.0025) and flat["gap"]["gate_passed"] == 1


def test_evaluate_registered_checks_ids_before_measuring():
    calls = []

    def lazy():
        calls.append("gap")
        return m(-0.05, 0.005), FAIL, NULL_CONTROL, "lazy"

    claims = {c.id: c for c in parse_registry(ENTRY)}
    # a registered claim without a measurement: an error, and nothing is computed
    with pytest.raises(RegistryError, match=r"no measurement for registered claim\(s\) \['identity'\]"):
        evaluate_registered(claims, {"gap": lazy})
    assert calls == [] and claims["gap"].verdict is None
    # a tuple or a function of nothing; a measurement for another id is not used (nor computed)
    out = evaluate_registered(claims, {"identity": (m(0.1, 0.4), None, None, "eager"), "gap": lazy,
                                       "old_v1": lambda: calls.append("old_v1")})
    assert out is claims and calls == ["gap"]
    assert (claims["gap"].verdict, claims["identity"].verdict) == ("inconclusive", "passed")  # gate failed
    assert claims["gap"].detail == "lazy"


def test_evaluate_requires_what_the_registry_defines():
    claims = {c.id: c for c in parse_registry(ENTRY)}
    with pytest.raises(RegistryError, match="defines a gate"):
        claims["gap"].evaluate(m(0.02, 0.05), control=NULL_CONTROL)
    with pytest.raises(RegistryError, match="defines a control"):
        claims["gap"].evaluate(m(0.02, 0.05), gate=PASS)
    with pytest.raises(RegistryError, match="register it first"):
        claims["identity"].evaluate(m(0.1, 0.4), gate=PASS)


@pytest.mark.parametrize("edit, message", [
    (("kind: replication", "kind: claim"), "kind must be one of"),
    (("direction: greater", "direction: up"), "direction must be one of"),
    (("smallest_effect: 0.01", "smallest_effect: -1"), "'smallest_effect' must be >= 0"),
    (("null_value: 0\n", "null_value: .inf\n"), "'null_value' must be a finite number"),
    (("    source: Sec. 4, Table 2\n", ""), "missing source"),
    (("id: gap", "id: Gap"), "snake_case"),
    (("id: identity", "id: gap"), "duplicate claim id"),
    (("gate: the method reaches 0.9 held-out accuracy in every seed", "gate: 'none:'"), "must say why"),
    (("unit: ratio", "unit: ratio\n    colour: red"), "unknown field(s) colour"),
    (("claims:", "claims: ["), "not valid YAML"),
])
def test_registry_errors_name_the_problem(edit, message):
    text = ENTRY.replace(*edit)
    with pytest.raises(RegistryError) as info:
        parse_registry(text, "papers/x/claims.yaml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def _record(tmp_path, claims):
    reg = tmp_path / "claims.yaml"
    reg.write_text(ENTRY)
    return build_metrics(slug="demo", title="Demo", url="https://example.org", profile="smoke", device="cpu",
                         seeds=[0, 1, 2], claims=claims, headline={}, params={}, registry=reg)


def test_metrics_record_checks_registry_and_recomputes_verdicts(tmp_path):
    claims = parse_registry(ENTRY)
    claims[0].evaluate(m(0.02, 0.05), gate=PASS, control=NULL_CONTROL)
    claims[1].evaluate(m(1.1, 1.3))
    record = _record(tmp_path, claims)
    assert [c["verdict"] for c in record["claims"]] == ["reproduced", "failed"]
    assert len(record["registry"]["sha256"]) == 64
    forged = json.loads(json.dumps(record))
    forged["claims"][1]["verdict"] = "passed"
    with pytest.raises(MetricsError, match="not what the shared rule gives"):
        validate_metrics(forged)
    with pytest.raises(MetricsError, match="not the registry's"):
        _record(tmp_path, claims[:1])
