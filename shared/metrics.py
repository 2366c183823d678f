"""The one ``metrics.json`` schema every paper writes, its validation and a deterministic writer.

A paper's claims are registered in ``papers/<slug>/claims.yaml`` (see :mod:`shared.claims`); the notebook
measures, evaluates each claim (the shared rule decides the verdict) and calls :func:`write_metrics`,
which checks that every registered claim was evaluated and records the registry's hash. The file holds nothing that varies between two runs of the same seed and
profile on the same machine (no timestamps, no wall times: the runner writes those to ``runtime.json``),
so a rerun gives a byte-identical ``metrics.json``. See docs/metrics.md for the field reference.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
# replication claims: reproduced / not_reproduced / inconclusive; checks: passed / failed
VERDICTS = ("reproduced", "not_reproduced", "inconclusive", "passed", "failed")
PROFILES = ("smoke", "small", "full")
VERDICTS_FILE = "verdicts.json"
# Libraries whose versions are recorded when installed (the record says which were present).
TRACKED_LIBRARIES = (
    "torch", "numpy", "scipy", "pandas", "scikit-learn", "transformers", "datasets", "peft", "seaborn",
)

_NUMBER = {"type": ["number", "null"]}
_MEASURED = {
    "type": "object",
    "additionalProperties": False,
    "required": ["value", "ci_low", "ci_high", "ci_level", "n", "method", "unit"],
    "properties": {
        "value": _NUMBER,
        "ci_low": _NUMBER,
        "ci_high": _NUMBER,
        "ci_level": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "n": {"type": "integer", "minimum": 1},
        "method": {"type": "string", "minLength": 1},
        "unit": {"type": "string"},
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "paper replication metrics",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "paper", "profile", "device", "seeds", "registry", "claims", "headline",
                 "params", "environment"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "paper": {
            "type": "object",
            "additionalProperties": False,
            "required": ["slug", "title", "url"],
            "properties": {
                "slug": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                "title": {"type": "string", "minLength": 1},
                "url": {"type": "string", "pattern": "^https?://"},
            },
        },
        "profile": {"enum": list(PROFILES)},
        "device": {"type": "string", "minLength": 1},
        "seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
        "registry": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path", "sha256"],
            "properties": {"path": {"type": "string"}, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        },
        "claims": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "kind", "statement", "source", "paper_value", "metric", "criterion", "rule",
                             "measured", "gate", "control", "verdict", "reason", "detail"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                    "kind": {"enum": ["replication", "check"]},
                    "statement": {"type": "string", "minLength": 1},
                    "source": {"type": "string", "minLength": 1},
                    "paper_value": {"type": "string"},
                    "metric": {"type": "string", "minLength": 1},
                    "criterion": {"type": "string", "minLength": 1},
                    "rule": {"type": "object", "required": ["direction"]},
                    "measured": _MEASURED,
                    "gate": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["condition", "passed", "value", "detail"],
                        "properties": {"condition": {"type": "string"}, "passed": {"type": ["boolean", "null"]},
                                       "value": _NUMBER, "detail": {"type": "string"}},
                    },
                    "control": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["arm", "measured", "meets_criterion", "detail"],
                        "properties": {"arm": {"type": "string"},
                                       "measured": {"oneOf": [{"type": "null"}, _MEASURED]},
                                       "meets_criterion": {"type": ["boolean", "null"]},
                                       "detail": {"type": "string"}},
                    },
                    "verdict": {"enum": list(VERDICTS)},
                    "reason": {"type": "string", "minLength": 1},
                    "detail": {"type": "string"},
                },
            },
        },
        "headline": {"type": "object", "additionalProperties": {"type": ["number", "string", "null"]}},
        "params": {"type": "object"},
        "environment": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


class MetricsError(ValueError):
    """metrics.json does not match the schema."""


@dataclass
class Measurement:
    """A measured quantity with its uncertainty: ``value`` and a ``ci_level`` interval over ``n`` units
    (seeds, usually), computed by ``method`` (e.g. "t interval over seeds")."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    method: str
    ci_level: float = 0.95
    unit: str = ""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for lib in TRACKED_LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _round(obj: Any, digits: int = 6) -> Any:
    """Round floats to ``digits`` significant digits so the file is stable and readable."""
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            return None
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, digits) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _round(obj.item(), digits)
    return obj


def build_metrics(
    *,
    slug: str,
    title: str,
    url: str,
    profile: str,
    device: str,
    seeds: list[int],
    claims: list[Any],
    headline: dict[str, Any],
    params: dict[str, Any],
    registry: str | Path | None = None,
) -> dict[str, Any]:
    """The record of a run. ``claims`` are the evaluated :class:`shared.claims.Claim` objects of the paper's
    registry (``registry``, default ``papers/<slug>/claims.yaml``), every one of them, in registry order."""
    from shared import paths
    from shared.claims import REGISTRY_NAME, parse_registry

    reg_path = Path(registry) if registry is not None else paths.paper_dir(slug) / REGISTRY_NAME
    if not reg_path.exists():
        raise MetricsError(f"{slug}: no claim registry at {reg_path}")
    registered = [c.id for c in parse_registry(reg_path.read_text(), str(reg_path))]
    given = [c.id for c in claims]
    if given != registered:
        raise MetricsError(f"{slug}: the claims evaluated ({', '.join(given)}) are not the registry's "
                           f"({', '.join(registered)}, in that order)")
    undecided = [c.id for c in claims if c.verdict is None or c.measured is None]
    if undecided:
        raise MetricsError(f"claims without a verdict: {', '.join(undecided)}")
    try:
        rel = str(reg_path.resolve().relative_to(paths.repo_root()))
    except ValueError:
        rel = str(reg_path)
    record = {
        "schema_version": SCHEMA_VERSION,
        "paper": {"slug": slug, "title": title, "url": url},
        "profile": profile,
        "device": device,
        "seeds": [int(s) for s in seeds],
        "registry": {"path": rel, "sha256": hashlib.sha256(reg_path.read_bytes()).hexdigest()},
        "claims": [c.record() for c in claims],
        "headline": dict(headline),
        "params": dict(params),
        "environment": library_versions(),
    }
    record = _round(record)
    validate_metrics(record)
    return record


def write_metrics(output_dir: str | Path, **kwargs: Any) -> Path:
    """Build, validate and write ``metrics.json`` into ``output_dir`` and, beside it, ``verdicts.json``:
    the flat per-claim numbers (value, interval, verdict code, control, gate) that ``dvc metrics diff``
    and ``dvc exp show`` compare. Return the path of ``metrics.json``."""
    from shared.claims import flat_verdicts

    record = build_metrics(**kwargs)
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    flat = {"claims": flat_verdicts(record["claims"])}
    (Path(output_dir) / VERDICTS_FILE).write_text(json.dumps(flat, indent=2) + "\n")
    return path


def validate_metrics(record: dict[str, Any]) -> None:
    """Raise :class:`MetricsError` naming the first problem if ``record`` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise MetricsError(f"metrics.json {where}: {err.message}")
    ids = [c["id"] for c in record["claims"]]
    if len(set(ids)) != len(ids):
        raise MetricsError("metrics.json claims: claim ids must be unique")
    for c in record["claims"]:
        m = c["measured"]
        if None not in (m["value"], m["ci_low"], m["ci_high"]) and not m["ci_low"] <= m["ci_high"]:
            raise MetricsError(f"metrics.json claim {c['id']}: ci_low > ci_high")
        try:
            expected = recompute_verdict(c)
        except (TypeError, ValueError) as exc:
            raise MetricsError(f"metrics.json claim {c['id']}: cannot apply the verdict rule ({exc})") from None
        if c["verdict"] != expected:
            raise MetricsError(f"metrics.json claim {c['id']}: verdict {c['verdict']!r} is not what the "
                               f"shared rule gives ({expected!r})")


def recompute_verdict(claim: dict[str, Any]) -> str:
    """The verdict :func:`shared.claims.verdict_rule` gives for a stored claim (a stored verdict must equal it)."""
    from shared.claims import Control, Gate, Rule, verdict_rule

    gate = claim["gate"]
    ctrl = claim["control"]
    verdict, _, _ = verdict_rule(
        claim["kind"], Rule(**claim["rule"]), Measurement(**claim["measured"]),
        None if gate["passed"] is None else Gate(gate["passed"], gate["detail"], gate["value"]),
        None if ctrl["measured"] is None else Control(Measurement(**ctrl["measured"]), ctrl["detail"]))
    return verdict


def load_metrics(path: str | Path) -> dict[str, Any]:
    record = json.loads(Path(path).read_text())
    validate_metrics(record)
    return record
