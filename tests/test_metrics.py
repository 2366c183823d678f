import copy
import json

import pytest

from shared.claims import Control, Gate, parse_registry
from shared.metrics import Measurement, MetricsError, build_metrics, load_metrics, validate_metrics, write_metrics

REGISTRY = """
claims:
  - id: effect
    kind: replication
    statement: X beats Y
    source: Table 1
    paper_value: "+3.1 pp"
    metric: X minus Y, per seed
    unit: pp
    direction: greater
    null_value: 0
    smallest_effect: 0
    criterion: t interval above 0
    gate: "X learned the task"
    control: "Y against itself (A/A)"
  - id: flat
    kind: check
    statement: Z is flat
    source: Fig. 2
    paper_value: ""
    metric: slope
    unit: ""
    direction: within
    target: 0
    tolerance: 0.1
    criterion: interval inside +-0.1
    gate: "none: a check"
    control: "none: a check"
"""


def _claims():
    a, b = parse_registry(REGISTRY)
    a.evaluate(Measurement(0.0312345678, 0.01, 0.05, n=3, method="t", unit="pp"), gate=Gate(True, "ok", 0.9),
               control=Control(Measurement(0.0, -0.01, 0.01, n=3, method="t")), detail="p = 0.01")
    b.evaluate(Measurement(None, None, None, n=1, method="not computed"))
    return [a, b]


def _record(tmp_path=None, **over):
    import tempfile
    from pathlib import Path

    reg = Path(tempfile.mkdtemp()) / "claims.yaml"
    reg.write_text(REGISTRY)
    kw = dict(slug="demo_paper", title="Demo", url="https://arxiv.org/abs/0000.00000", profile="smoke",
              device="cpu", seeds=[0, 1, 2], claims=_claims(), headline={"acc": 0.912345678, "note": "x"},
              params={"n": 3, "lr": 0.001}, registry=reg)
    kw.update(over)
    return build_metrics(**kw)


def test_build_rounds_and_validates():
    rec = _record()
    assert rec["claims"][0]["measured"]["value"] == 0.0312346  # 6 significant digits
    assert rec["headline"]["acc"] == 0.912346
    assert rec["claims"][1]["measured"]["value"] is None
    assert "python" in rec["environment"] and "numpy" in rec["environment"]
    validate_metrics(rec)


def test_write_is_byte_identical_for_identical_input(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    reg = tmp_path / "claims.yaml"
    reg.write_text(REGISTRY)
    for out in (a, b):
        write_metrics(out, slug="demo_paper", title="Demo", url="https://x.org", profile="small", device="cpu",
                      seeds=[0], claims=_claims(), headline={}, params={}, registry=reg)
    for name in ("metrics.json", "verdicts.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert load_metrics(a / "metrics.json")["paper"]["slug"] == "demo_paper"
    flat = json.loads((a / "verdicts.json").read_text())["claims"]
    assert flat["effect"] == {"value": 0.0312346, "ci_low": 0.01, "ci_high": 0.05, "verdict": 1,
                              "control_value": 0.0, "gate_passed": 1}
    assert flat["flat"]["verdict"] == -1  # a check without an interval fails


def test_undecided_or_missing_claims_are_rejected():
    claims = _claims()
    fresh = parse_registry(REGISTRY)[1]
    with pytest.raises(MetricsError, match="without a verdict: flat"):
        _record(claims=[claims[0], fresh])
    with pytest.raises(MetricsError, match="not the registry's"):
        _record(claims=[claims[1], claims[0]])


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("claims"), "'claims' is a required property"),
    (lambda r: r.__setitem__("profile", "medium"), "profile"),
    (lambda r: r["claims"][0].__setitem__("verdict", "yes"), "claims/0/verdict"),
    (lambda r: r["claims"][0]["measured"].__setitem__("ci_level", 95), "ci_level"),
    (lambda r: r["paper"].__setitem__("slug", "Bad-Slug"), "paper/slug"),
    (lambda r: r.__setitem__("wall_time_s", 3.0), "Additional properties"),
    (lambda r: r["claims"].append(copy.deepcopy(r["claims"][0])), "unique"),
    (lambda r: r["claims"][0]["measured"].update(ci_low=0.9, ci_high=0.1), "ci_low > ci_high"),
    (lambda r: r["claims"][0].__setitem__("verdict", "not_reproduced"), "not what the shared rule gives"),
    (lambda r: r["claims"][0]["gate"].__setitem__("passed", False), "not what the shared rule gives"),
    (lambda r: r["claims"][0].__setitem__("kind", "theory"), "claims/0/kind"),
    (lambda r: r["registry"].__setitem__("sha256", "abc"), "registry/sha256"),
])
def test_schema_violations_name_the_field(mutate, message):
    rec = json.loads(json.dumps(_record()))
    mutate(rec)
    with pytest.raises(MetricsError, match=message):
        validate_metrics(rec)
