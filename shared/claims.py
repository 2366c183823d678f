"""The claim registry (``papers/<slug>/claims.yaml``) and the one verdict rule every paper uses.

The registry is the text of record of what a paper's replication tests. Per claim it states the claim,
where the paper states it, the kind (``replication`` or ``check``), the statistic and its unit, the rule
(direction and boundary, or the agreement band), the gate (when the experiment can test the claim at all)
and the control (an arm where the effect is absent by design, judged by the same rule). It is committed
before the claim's first ``small`` run; ``papers prereg`` reads git to show that it was.

The notebook measures and calls :meth:`Claim.evaluate` with the statistic's interval, the gate's outcome
and the control's interval; :func:`verdict_rule` turns them into the verdict. Nothing else decides one.

The rule, for a statistic with interval [lo, hi]:

- ``direction: greater``: the boundary is ``b = null_value + smallest_effect``. The interval lies *beyond*
  when lo > b, *short* when hi < b, and *straddles* otherwise. ``less`` mirrors it (b = null - effect).
- ``direction: within`` (a claim of agreement): beyond when [lo, hi] lies inside target +- tolerance,
  short when it lies wholly outside, straddles otherwise.

A replication claim is ``reproduced`` when its gate passed, its interval lies beyond and its control's
does not; ``not_reproduced`` when its gate passed and its interval falls short; ``inconclusive``
otherwise, with the reason (gate failed, no interval, the control meets the criterion too, the interval
straddles the boundary). A check is ``passed`` under the same conditions as ``reproduced`` and
``failed`` otherwise; checks never count as reproductions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from shared.metrics import Measurement

REGISTRY_NAME = "claims.yaml"
KINDS = ("replication", "check")
DIRECTIONS = ("greater", "less", "within")
REPLICATION_VERDICTS = ("reproduced", "not_reproduced", "inconclusive")
CHECK_VERDICTS = ("passed", "failed")
# Numeric codes for the flat per-claim metrics DVC diffs (verdicts.json).
VERDICT_CODES = {"reproduced": 1, "passed": 1, "inconclusive": 0, "not_reproduced": -1, "failed": -1}
NONE_PREFIX = "none:"

_REQUIRED = ("id", "kind", "statement", "source", "paper_value", "metric", "unit", "direction",
             "criterion", "gate", "control")
_OPTIONAL = ("null_value", "smallest_effect", "target", "tolerance")


class RegistryError(ValueError):
    """A claim registry is missing, malformed or disagrees with the code that uses it."""


@dataclass(frozen=True)
class Rule:
    """Where the interval must lie: beyond ``boundary`` (greater/less) or inside ``band`` (within)."""

    direction: str
    null_value: float | None = None
    smallest_effect: float | None = None
    target: float | None = None
    tolerance: float | None = None

    @property
    def boundary(self) -> float:
        sign = 1.0 if self.direction == "greater" else -1.0
        return float(self.null_value) + sign * float(self.smallest_effect)

    @property
    def band(self) -> tuple[float, float]:
        return float(self.target) - float(self.tolerance), float(self.target) + float(self.tolerance)

    def describe(self) -> str:
        if self.direction == "within":
            lo, hi = self.band
            return f"interval inside [{lo:g}, {hi:g}] ({self.target:g} +- {self.tolerance:g})"
        op = ">" if self.direction == "greater" else "<"
        return (f"interval {op} {self.boundary:g} (no effect = {self.null_value:g}, smallest effect of "
                f"interest {self.smallest_effect:g})")

    def position(self, low: float | None, high: float | None) -> str:
        """``beyond``, ``short``, ``straddles`` or ``missing`` (no finite interval)."""
        if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
            return "missing"
        if low > high:
            raise ValueError(f"interval low {low} > high {high}")
        if self.direction == "within":
            band_lo, band_hi = self.band
            if band_lo <= low and high <= band_hi:
                return "beyond"
            if high < band_lo or low > band_hi:
                return "short"
            return "straddles"
        b = self.boundary
        if self.direction == "less":
            low, high, b = -high, -low, -b
        if low > b:
            return "beyond"
        if high < b:
            return "short"
        return "straddles"

    def margin(self, low: float | None, high: float | None) -> float | None:
        """How far the interval is from changing its position: the smallest distance between an end of
        [low, high] and a boundary of the rule (``boundary``, or either edge of ``band``). The position
        changes exactly when an end crosses a boundary, so a shift of either end by less than this leaves
        it (and the verdict it decides) as it is. None without a finite interval."""
        if self.position(low, high) == "missing":
            return None
        edges = self.band if self.direction == "within" else (self.boundary,)
        return min(abs(end - edge) for end in (low, high) for edge in edges)


@dataclass(frozen=True)
class Gate:
    """The gate's outcome as the notebook measured it: ``passed`` and the numbers behind it."""

    passed: bool
    detail: str
    value: float | None = None


@dataclass(frozen=True)
class Control:
    """The falsification control: the same statistic on an arm where the effect is absent by design."""

    measured: Measurement
    detail: str = ""


def verdict_rule(kind: str, rule: Rule, measured: Measurement, gate: Gate | None = None,
                 control: Control | None = None) -> tuple[str, str, bool | None]:
    """(verdict, reason, control_meets_criterion) for one claim; see the module docstring."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    position = rule.position(measured.ci_low, measured.ci_high)
    control_meets = None
    if control is not None:
        control_position = rule.position(control.measured.ci_low, control.measured.ci_high)
        control_meets = None if control_position == "missing" else control_position == "beyond"
    ok = "reproduced" if kind == "replication" else "passed"
    bad = "not_reproduced" if kind == "replication" else "failed"
    undecided = "inconclusive" if kind == "replication" else "failed"
    if gate is not None and not gate.passed:
        return undecided, f"gate failed: {gate.detail}", control_meets
    if position == "missing":
        return undecided, "no interval: the statistic could not be measured with an uncertainty", control_meets
    if position == "short":
        return bad, f"interval falls short of the criterion, which needs {rule.describe()}", control_meets
    if position == "straddles":
        return undecided, f"interval straddles the boundary of the criterion, which needs {rule.describe()}", control_meets
    if control is not None and control_meets is None:
        return undecided, "the control could not be measured with an interval", control_meets
    if control_meets:
        return undecided, ("the control meets the criterion too, so the criterion does not discriminate: "
                           f"{control.detail}"), control_meets
    return ok, f"interval meets the criterion: {rule.describe()}", control_meets


@dataclass
class Claim:
    """One registered claim; :meth:`evaluate` records the measurement and applies :func:`verdict_rule`."""

    id: str
    kind: str
    statement: str
    source: str
    paper_value: str
    metric: str
    unit: str
    criterion: str
    gate_condition: str
    control_arm: str
    rule: Rule
    measured: Measurement | None = None
    gate: Gate | None = None
    control: Control | None = None
    control_meets: bool | None = None
    verdict: str | None = None
    reason: str = ""
    detail: str = ""

    @property
    def has_gate(self) -> bool:
        return not self.gate_condition.lower().startswith(NONE_PREFIX)

    @property
    def has_control(self) -> bool:
        return not self.control_arm.lower().startswith(NONE_PREFIX)

    def evaluate(self, measured: Measurement, *, gate: Gate | None = None, control: Control | None = None,
                 detail: str = "") -> "Claim":
        """Decide the verdict from the measurement, the gate and the control (all as the registry says)."""
        if self.has_gate and gate is None:
            raise RegistryError(f"claim {self.id}: the registry defines a gate ({self.gate_condition!r}) "
                                "but evaluate() got none")
        if not self.has_gate and gate is not None:
            raise RegistryError(f"claim {self.id}: the registry says {self.gate_condition!r} but evaluate() "
                                "got a gate; register it first")
        if self.has_control and control is None:
            raise RegistryError(f"claim {self.id}: the registry defines a control ({self.control_arm!r}) "
                                "but evaluate() got none")
        if not self.has_control and control is not None:
            raise RegistryError(f"claim {self.id}: the registry says {self.control_arm!r} but evaluate() "
                                "got a control; register it first")
        if measured.unit != self.unit:
            measured = Measurement(**{**asdict(measured), "unit": self.unit})
        self.verdict, self.reason, self.control_meets = verdict_rule(self.kind, self.rule, measured, gate,
                                                                     control)
        self.measured, self.gate, self.control, self.detail = measured, gate, control, detail
        return self

    def record(self) -> dict[str, Any]:
        """The claim as ``metrics.json`` stores it."""
        if self.measured is None or self.verdict is None:
            raise RegistryError(f"claim {self.id} was not evaluated")
        return {
            "id": self.id,
            "kind": self.kind,
            "statement": self.statement,
            "source": self.source,
            "paper_value": self.paper_value,
            "metric": self.metric,
            "criterion": self.criterion,
            "rule": {k: v for k, v in asdict(self.rule).items() if v is not None},
            "measured": asdict(self.measured),
            "gate": {"condition": self.gate_condition,
                     "passed": None if self.gate is None else bool(self.gate.passed),
                     "value": None if self.gate is None else self.gate.value,
                     "detail": "" if self.gate is None else self.gate.detail},
            "control": {"arm": self.control_arm,
                        "measured": None if self.control is None else asdict(self.control.measured),
                        "meets_criterion": self.control_meets,
                        "detail": "" if self.control is None else self.control.detail},
            "verdict": self.verdict,
            "reason": self.reason,
            "detail": self.detail,
        }


def registry_path(slug: str) -> Path:
    from shared import paths

    return paths.paper_dir(slug) / REGISTRY_NAME


def registry_sha256(slug: str) -> str:
    return hashlib.sha256(registry_path(slug).read_bytes()).hexdigest()


def _number(entry: dict[str, Any], key: str, where: str, minimum: float | None = None) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RegistryError(f"{where}: '{key}' must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise RegistryError(f"{where}: '{key}' must be >= {minimum:g}, got {value!r}")
    return float(value)


def parse_entry(entry: Any, where: str) -> Claim:
    """Validate one registry entry and build its :class:`Claim`; errors name the claim and the field."""
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: each claim must be a mapping")
    cid = entry.get("id")
    where = f"{where} claim {cid!r}"
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise RegistryError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key in _REQUIRED:
        if not isinstance(entry[key], str) or (not entry[key].strip() and key not in ("paper_value", "unit")):
            raise RegistryError(f"{where}: '{key}' must be a non-empty string")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", cid):
        raise RegistryError(f"{where}: id must be snake_case")
    if entry["kind"] not in KINDS:
        raise RegistryError(f"{where}: kind must be one of {', '.join(KINDS)}")
    direction = entry["direction"]
    if direction not in DIRECTIONS:
        raise RegistryError(f"{where}: direction must be one of {', '.join(DIRECTIONS)}")
    if direction == "within":
        rule = Rule(direction, target=_number(entry, "target", where),
                    tolerance=_number(entry, "tolerance", where, minimum=0))
        stray = [k for k in ("null_value", "smallest_effect") if k in entry]
    else:
        rule = Rule(direction, null_value=_number(entry, "null_value", where),
                    smallest_effect=_number(entry, "smallest_effect", where, minimum=0))
        stray = [k for k in ("target", "tolerance") if k in entry]
    if stray:
        raise RegistryError(f"{where}: {', '.join(stray)} do(es) not apply to direction {direction}")
    if entry["kind"] == "replication":
        for key in ("gate", "control"):
            text = entry[key].strip()
            if text.lower().startswith(NONE_PREFIX) and not text[len(NONE_PREFIX):].strip():
                raise RegistryError(f"{where}: a replication claim without a {key} must say why "
                                    f"('{NONE_PREFIX} <reason>')")
    return Claim(id=cid, kind=entry["kind"], statement=entry["statement"].strip(),
                 source=entry["source"].strip(), paper_value=entry["paper_value"].strip(),
                 metric=entry["metric"].strip(), unit=entry["unit"].strip(),
                 criterion=entry["criterion"].strip(), gate_condition=entry["gate"].strip(),
                 control_arm=entry["control"].strip(), rule=rule)


def parse_registry(text: str, where: str = "claims.yaml") -> list[Claim]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise RegistryError(f"{where}{at}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list) or not data["claims"]:
        raise RegistryError(f"{where}: expected a mapping with a non-empty list 'claims'")
    claims = [parse_entry(e, where) for e in data["claims"]]
    ids = [c.id for c in claims]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise RegistryError(f"{where}: duplicate claim id(s) {', '.join(dupes)}")
    return claims


def load_claims(slug: str) -> dict[str, Claim]:
    """The paper's registered claims, by id, in registry order (what a notebook evaluates)."""
    path = registry_path(slug)
    if not path.exists():
        raise RegistryError(f"{slug}: no claim registry at papers/{slug}/{REGISTRY_NAME}")
    return {c.id: c for c in parse_registry(path.read_text(), f"papers/{slug}/{REGISTRY_NAME}")}


Evaluation = tuple[Measurement, Gate | None, Control | None, str]  # what one claim's measurement gives


def evaluate_registered(claims: dict[str, Claim],
                        measurements: Mapping[str, Evaluation | Callable[[], Evaluation]]) -> dict[str, Claim]:
    """Evaluate every claim in ``claims`` with its measurement, in registry order; returns ``claims``.

    ``measurements`` maps each claim id to ``(measurement, gate, control, detail)``, or to a function without
    arguments that returns it (computed only after the ids are checked). A claim without a measurement is an
    error before any claim is evaluated; a measurement for an id not in ``claims`` is not used (a test may
    evaluate a subset; ``write_metrics`` checks that a run evaluated exactly the registry)."""
    missing = sorted(set(claims) - set(measurements))
    if missing:
        raise RegistryError(f"no measurement for registered claim(s) {missing}")
    for cid, claim in claims.items():
        got = measurements[cid]
        m, gate, control, detail = got() if callable(got) else got
        claim.evaluate(m, gate=gate, control=control, detail=detail)
    return claims


def entry_fingerprint(entry: dict[str, Any]) -> str:
    """A stable hash of one registry entry (what `papers prereg` compares across commits)."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flat_verdicts(claims: list[dict[str, Any]]) -> dict[str, Any]:
    """Per claim, the numbers ``dvc metrics diff`` can compare: value, interval, verdict code, control."""
    out: dict[str, Any] = {}
    for c in claims:
        m = c["measured"]
        row = {"value": m["value"], "ci_low": m["ci_low"], "ci_high": m["ci_high"],
               "verdict": VERDICT_CODES[c["verdict"]]}
        ctrl = c["control"]["measured"]
        if ctrl is not None:
            row["control_value"] = ctrl["value"]
        if c["gate"]["passed"] is not None:
            row["gate_passed"] = int(c["gate"]["passed"])
        out[c["id"]] = row
    return out


__all__ = ["Claim", "Control", "Gate", "RegistryError", "Rule", "flat_verdicts", "load_claims",
           "parse_registry", "registry_sha256", "verdict_rule", "VERDICT_CODES"]
