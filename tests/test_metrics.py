import copy
import json

import pytest

from shared.metrics import (Claim, Measurement, MetricsError, build_metrics, load_metrics, validate_metrics,
                            write_metrics)


def _claims():
    a = Claim("effect", "X beats Y", "mean difference > 0 with p < 0.05", paper_value="+3.1 pp")
    a.decide(Measurement(0.0312345678, 0.01, 0.05, n=3, method="t", unit="pp"), "reproduced", "p = 0.01")
    b = Claim("null", "Z is flat", "|slope| < 0.1")
    b.decide(Measurement(None, None, None, n=1, method="not computed"), "inconclusive")
    return [a, b]


def _record(**over):
    kw = dict(slug="demo_paper", title="Demo", url="https://arxiv.org/abs/0000.00000", profile="smoke",
              device="cpu", seeds=[0, 1, 2], claims=_claims(), headline={"acc": 0.912345678, "note": "x"},
              params={"n": 3, "lr": 0.001})
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
    write_metrics(a, slug="demo_paper", title="Demo", url="https://x.org", profile="small", device="cpu",
                  seeds=[0], claims=_claims(), headline={}, params={})
    write_metrics(b, slug="demo_paper", title="Demo", url="https://x.org", profile="small", device="cpu",
                  seeds=[0], claims=_claims(), headline={}, params={})
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert load_metrics(a / "metrics.json")["paper"]["slug"] == "demo_paper"


def test_undecided_claim_and_bad_verdict_are_rejected():
    with pytest.raises(MetricsError, match="without a verdict: open"):
        _record(claims=[Claim("open", "s", "c")])
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("x", "s", "c").decide(Measurement(1, 0, 2, 3, "t"), "passed")


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("claims"), "'claims' is a required property"),
    (lambda r: r.__setitem__("profile", "medium"), "profile"),
    (lambda r: r["claims"][0].__setitem__("verdict", "yes"), "claims/0/verdict"),
    (lambda r: r["claims"][0]["measured"].__setitem__("ci_level", 95), "ci_level"),
    (lambda r: r["paper"].__setitem__("slug", "Bad-Slug"), "paper/slug"),
    (lambda r: r.__setitem__("wall_time_s", 3.0), "Additional properties"),
    (lambda r: r["claims"].append(copy.deepcopy(r["claims"][0])), "unique"),
    (lambda r: r["claims"][0]["measured"].update(ci_low=0.9, ci_high=0.1), "ci_low > ci_high"),
])
def test_schema_violations_name_the_field(mutate, message):
    rec = json.loads(json.dumps(_record()))
    mutate(rec)
    with pytest.raises(MetricsError, match=message):
        validate_metrics(rec)
