"""The one ``metrics.json`` schema every paper writes, its validation and a deterministic writer.

A paper's claims are declared (pre-registered) as :class:`Claim` objects with a statement and the
criterion that decides the verdict; the notebook measures, fills in value, uncertainty and verdict, and
calls :func:`write_metrics`. The file holds nothing that varies between two runs of the same seed and
profile on the same machine (no timestamps, no wall times: the runner writes those to ``runtime.json``),
so a rerun gives a byte-identical ``metrics.json``. See docs/metrics.md for the field reference.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
VERDICTS = ("reproduced", "not_reproduced", "inconclusive")
PROFILES = ("smoke", "small", "full")
# Libraries whose versions are recorded when installed (the record says which were present).
TRACKED_LIBRARIES = (
    "torch", "numpy", "scipy", "pandas", "scikit-learn", "transformers", "datasets", "peft", "seaborn",
)

_NUMBER = {"type": ["number", "null"]}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "paper replication metrics",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "paper", "profile", "device", "seeds", "claims", "headline",
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
        "claims": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "statement", "criterion", "paper_value", "measured", "verdict", "detail"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                    "statement": {"type": "string", "minLength": 1},
                    "criterion": {"type": "string", "minLength": 1},
                    "paper_value": {"type": "string"},
                    "measured": {
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
                    },
                    "verdict": {"enum": list(VERDICTS)},
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


@dataclass
class Claim:
    """One pre-registered claim: what the paper says and the criterion that decides the verdict.

    ``statement``, ``criterion`` and ``paper_value`` are written before any result exists (in the paper's
    module); :meth:`decide` records the measurement and the verdict the notebook computed from data.
    """

    id: str
    statement: str
    criterion: str
    paper_value: str = ""
    measured: Measurement | None = None
    verdict: str | None = None
    detail: str = ""

    def decide(self, measured: Measurement, verdict: str, detail: str = "") -> "Claim":
        if verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict must be one of {VERDICTS}, got {verdict!r}")
        self.measured, self.verdict, self.detail = measured, verdict, detail
        return self


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
    claims: list[Claim],
    headline: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    undecided = [c.id for c in claims if c.verdict is None or c.measured is None]
    if undecided:
        raise MetricsError(f"claims without a verdict: {', '.join(undecided)}")
    record = {
        "schema_version": SCHEMA_VERSION,
        "paper": {"slug": slug, "title": title, "url": url},
        "profile": profile,
        "device": device,
        "seeds": [int(s) for s in seeds],
        "claims": [
            {
                "id": c.id,
                "statement": c.statement,
                "criterion": c.criterion,
                "paper_value": c.paper_value,
                "measured": asdict(c.measured),
                "verdict": c.verdict,
                "detail": c.detail,
            }
            for c in claims
        ],
        "headline": dict(headline),
        "params": dict(params),
        "environment": library_versions(),
    }
    record = _round(record)
    validate_metrics(record)
    return record


def write_metrics(output_dir: str | Path, **kwargs: Any) -> Path:
    """Build, validate and write ``metrics.json`` into ``output_dir``; return its path."""
    record = build_metrics(**kwargs)
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
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


def load_metrics(path: str | Path) -> dict[str, Any]:
    record = json.loads(Path(path).read_text())
    validate_metrics(record)
    return record
