#!/usr/bin/env python3
"""Print which of the project's packages import which (static, from the source; function-level imports
included): `python hack/import_graph.py [--modules]`. The boundary test (tests/unit/test_layering.py)
holds the rules; this shows the picture."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("api", "cli", "operator", "predictors", "transformers", "models", "streams")


def packages() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        for init in sorted((ROOT / folder).glob("vss_*/__init__.py")):
            found[init.parent.name] = init.parent
    return found


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def main() -> int:
    pkgs = packages()
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name, folder in pkgs.items():
        for path in sorted(folder.rglob("*.py")):
            for module in imports_of(path):
                top = module.split(".")[0]
                if top in pkgs and top != name:
                    edges[name][top].add(f"{path.relative_to(folder.parent)} -> {module}")
    for name in pkgs:
        targets = edges.get(name, {})
        print(f"{name} -> {', '.join(sorted(targets)) or '(none)'}")
        if "--modules" in sys.argv:
            for target in sorted(targets):
                for line in sorted(targets[target]):
                    print(f"    {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
