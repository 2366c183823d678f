"""A paper's identity, read from ``papers/<slug>/__init__.py`` without importing it.

Each paper package defines literal ``TITLE``, ``URL`` (its arXiv or proceedings page), ``GRADE``
(fidelity at reduced scale: A = the paper's own setting, B = faithful method at smaller scale or on
proxy data, C = only a proxy of the claim can be tested, D = the claim is not empirically testable)
and ``CITATION``.
"""

from __future__ import annotations

import ast

from shared import paths

FIELDS = ("TITLE", "URL", "GRADE", "CITATION")


def read_meta(slug: str) -> dict[str, str]:
    init = paths.paper_dir(slug) / "__init__.py"
    meta: dict[str, str] = {}
    if not init.exists():
        return meta
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in FIELDS:
                meta[name.lower()] = ast.literal_eval(node.value)
    return meta
