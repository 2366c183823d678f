"""The exact code a paper's stage depends on: its own files and the ``shared`` modules they import.

A paper stage must rerun when anything it executes changes, and only then: depending on the whole
``shared/`` directory would rerun every paper when, say, the report formatting changes. The closure is
computed from the import statements (module level and inside functions) of the paper's ``.py`` files and
its notebook, followed transitively through ``shared`` and ``papers``, plus what the runner itself
imports. ``papers deps SLUG`` prints it; a pipeline test checks every stage against it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from shared import paths

RUNNER_ROOT = "shared/runner.py"
LOCAL_PACKAGES = ("shared", "papers")


def _module_file(root: Path, module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] not in LOCAL_PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path, root: Path) -> set[str]:
    """Fully qualified names of the modules imported anywhere in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def closure(files: list[Path], root: Path) -> set[Path]:
    """All local files reachable from ``files`` through imports, package ``__init__`` files included."""
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path, root):
            target = _module_file(root, module)
            if target is None:
                continue
            parts = target.relative_to(root).parts
            for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
                init = root.joinpath(*parts[:i], "__init__.py")
                if init.exists() and init not in seen:
                    todo.append(init)
            if target not in seen:
                todo.append(target)
    return seen


def stage_code_deps(slug: str) -> list[str]:
    """Repository-relative paths of every code file the stage of ``slug`` executes, and its claim
    registry (the claims' text and rules are inputs of the verdicts), sorted."""
    root = paths.repo_root()
    pdir = root / "papers" / slug
    own = sorted(pdir.glob("*.py"))  # modules and the <slug>.nb.py notebook
    files = closure(own + [root / RUNNER_ROOT], root)
    files |= set(own)
    registry = pdir / "claims.yaml"
    if registry.exists():
        files.add(registry)
    return sorted(str(p.relative_to(root)) for p in files)
