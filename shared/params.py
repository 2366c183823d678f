"""Parameters: the notebook's ``parameters`` cell is the specification, ``params.yaml`` supplies values.

Each line of a paper notebook's ``parameters`` cell declares one parameter with a type annotation, a
default and a comment that documents it and may state a constraint after the last `` | ``::

    n_steps: int = 1500          # optimisation steps per model | x >= 1
    scratch_tokens: list[int] = [0, 1, 2, 4, 8]  # k values | all(k >= 0 for k in x)
    lr: float = 1e-3             # AdamW learning rate | 0 < x < 1

The constraint is a Python expression in ``x`` (the value) that may also name the other parameters
(``x <= seq_len``). Supported types: ``int``, ``float``, ``bool``, ``str``, ``list[T]`` and ``T | None``.

Resolution for ``papers run SLUG --profile P --set k=v``: the notebook defaults, then the paper's section
of ``params.yaml`` (which must equal the defaults for the ``small`` profile: a test checks it), then
``profiles.P`` of that section, then ``--set`` values. Every value is checked before any compute;
a problem is one :class:`ParamError` line naming the paper and the key.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("smoke", "small", "full")
DEFAULT_PROFILE = "small"
# Parameters the runner injects itself; every notebook declares them, params.yaml never sets them.
RUNNER_PARAMS = ("profile", "device", "output_dir", "progress")
_SCALARS = {"int", "float", "bool", "str"}
_SAFE_BUILTINS = {
    name: __builtins__[name] if isinstance(__builtins__, dict) else getattr(__builtins__, name)
    for name in ("all", "any", "len", "min", "max", "sum", "set", "sorted", "range", "abs", "int", "float")
}


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats, as DVC reads params.yaml: ``1e-3`` is a float
    (YAML 1.1 would make it a string)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


class ParamError(ValueError):
    """A parameter problem, reported as one line naming the paper and the key."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    doc: str = ""
    check: str | None = None


def _parameters_source(notebook: Path) -> str:
    import jupytext

    nb = jupytext.read(notebook)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ParamError(f"{notebook}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0].source


def parse_parameters_cell(source: str, where: str = "parameters cell") -> dict[str, ParamSpec]:
    """Parse a parameters cell into ordered :class:`ParamSpec` objects (see module docstring)."""
    tree = ast.parse(source)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    specs: dict[str, ParamSpec] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value):
            raise ParamError(
                f"{where}, line {stmt.lineno}: each statement must be `name: type = literal  # doc | check`"
            )
        name = stmt.target.id
        type_str = ast.unparse(stmt.annotation)
        _parse_type(type_str, f"{where}: {name}")
        try:
            default = ast.literal_eval(stmt.value)
        except ValueError as exc:
            raise ParamError(f"{where}: default of {name!r} is not a literal") from exc
        comment = comments.get(stmt.end_lineno, "")
        doc, _, check = comment.rpartition(" | ") if " | " in comment else (comment, "", "")
        spec = ParamSpec(name, type_str, default, doc.strip(), check.strip() or None)
        specs[name] = spec
    for required in RUNNER_PARAMS:
        if required not in specs:
            raise ParamError(f"{where}: must declare the runner parameter {required!r}")
    return specs


def read_notebook_params(notebook: Path) -> dict[str, ParamSpec]:
    return parse_parameters_cell(_parameters_source(notebook), where=str(notebook))


def _parse_type(type_str: str, where: str) -> tuple[str, bool]:
    """Return (base type, optional) for a supported annotation, else raise."""
    optional = False
    t = type_str.replace(" ", "")
    if t.endswith("|None"):
        optional, t = True, t[: -len("|None")]
    if t in _SCALARS:
        return t, optional
    if t.startswith("list[") and t.endswith("]") and t[5:-1] in _SCALARS:
        return t, optional
    raise ParamError(f"{where}: unsupported type annotation {type_str!r}")


def _coerce_scalar(value: Any, t: str) -> Any:
    if t == "bool":
        if isinstance(value, bool):
            return value
    elif t == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif t == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif t == "str":
        if isinstance(value, str):
            return value
    raise TypeError


def coerce(value: Any, type_str: str) -> Any:
    """Check ``value`` against a type annotation; return it normalised (int -> float, tuple -> list).

    Raises TypeError when it does not fit. Strings are never converted: ``"false"`` is not a bool.
    """
    t, optional = _parse_type(type_str, "type")
    if value is None:
        if optional:
            return None
        raise TypeError
    if t.startswith("list["):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return [_coerce_scalar(v, t[5:-1]) for v in value]
    return _coerce_scalar(value, t)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def validate(specs: dict[str, ParamSpec], values: dict[str, Any], paper: str) -> dict[str, Any]:
    """Check every value against its spec; return the full, normalised parameter dict."""
    unknown = sorted(set(values) - set(specs))
    if unknown:
        known = ", ".join(sorted(specs))
        raise ParamError(f"{paper}: unknown parameter {unknown[0]!r} (known: {known})")
    resolved: dict[str, Any] = {}
    for name, spec in specs.items():
        raw = values.get(name, spec.default)
        try:
            resolved[name] = coerce(raw, spec.type)
        except TypeError:
            raise ParamError(
                f"{paper}: parameter {name!r} must be {spec.type}, got {_describe(raw)}"
            ) from None
        value = resolved[name]
        floats = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in floats) and "inf" not in (spec.check or ""):
            raise ParamError(f"{paper}: parameter {name!r} = {value!r} is not finite (only a parameter whose "
                             "constraint names inf accepts inf or nan)")
    for name, spec in specs.items():
        if not spec.check:
            continue
        scope = {k: v for k, v in resolved.items() if k != "x"}
        scope["x"] = resolved[name]
        try:
            # one globals dict (not globals + locals) so that generator expressions see the other names
            ok = eval(spec.check, {"__builtins__": _SAFE_BUILTINS, **scope})  # noqa: S307 (repo's own notebooks)
        except Exception as exc:  # a broken constraint is a notebook bug; say so plainly
            raise ParamError(f"{paper}: constraint of {name!r} `{spec.check}` failed to evaluate: {exc}") from None
        if not ok:
            what = f" ({spec.doc})" if spec.doc else ""
            raise ParamError(
                f"{paper}: parameter {name!r} = {resolved[name]!r} violates `{spec.check}`{what}"
            )
    return resolved


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are YAML scalars or lists (``n=3``, ``ks=[0,1]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.load(raw, Loader=YamlLoader) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ParamError(f"--set {key.strip()}: cannot parse value {raw!r}: {exc}") from None
    return out


def load_params_file(path: Path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=YamlLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamError(f"{path}{at}: not valid YAML ({problem})") from None
    except OSError as exc:
        raise ParamError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: top level must be a mapping")
    return data


def profile_overrides(section: dict[str, Any], profile: str, paper: str) -> dict[str, Any]:
    profiles = section.get("profiles") or {}
    if profile not in PROFILES:
        raise ParamError(f"{paper}: unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ParamError(f"{paper}: params.yaml defines unknown profile {unknown[0]!r}")
    return dict(profiles.get(profile) or {})


def resolve(
    specs: dict[str, ParamSpec],
    params_file_data: dict[str, Any],
    paper: str,
    profile: str,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge defaults, the params.yaml section, the profile and overrides; validate; return them.

    Runner parameters (profile, device, output_dir) are not part of the result.
    """
    if paper not in params_file_data:
        raise ParamError(f"{paper}: params.yaml has no section {paper!r}")
    section = dict(params_file_data[paper] or {})
    prof = profile_overrides(section, profile, paper)
    section.pop("profiles", None)
    paper_specs = {k: v for k, v in specs.items() if k not in RUNNER_PARAMS}
    merged: dict[str, Any] = {}
    for source in (section, prof, overrides or {}):
        for key, value in source.items():
            if key in RUNNER_PARAMS:
                flag = {"profile": "--profile", "device": "--device", "output_dir": "--out",
                        "progress": "--quiet"}[key]
                raise ParamError(f"{paper}: {key!r} is set by the runner (use papers run {flag})")
            merged[key] = value
    return validate(paper_specs, merged, paper)


def snapshot(namespace: dict[str, Any], slug: str) -> dict[str, Any]:
    """The values of a paper's parameters in ``namespace`` (a notebook's ``globals()``), runner
    parameters excluded: what ``metrics.json`` records under ``params``."""
    from shared.paths import notebook_path

    specs = read_notebook_params(notebook_path(slug))
    return {name: namespace[name] for name in specs if name not in RUNNER_PARAMS}
