#!/usr/bin/env python3
"""Make a virtualenv hold the dependencies of some extras of pyproject.toml, as `make serve` and `make test`
need them: `python hack/install_extras.py VENV serving,torch`.

Each installed extra leaves a stamp `VENV/.deps-<pyproject hash>-<extra>`, and so does every extra it names
(`dev` names `serving`), so serve, then test, then serve again install only what is missing, and a changed
pyproject.toml installs again. pip is given the extras already stamped with the new ones, so it resolves one
consistent set instead of upgrading a package under an extra installed before.

`[tool.vss.no-deps]` in pyproject.toml names, per extra, packages installed after it with `--no-deps` (one whose
declared dependencies would break the set, said at the extra)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
STAMP_PREFIX = ".deps-"


def deps_key(pyproject: bytes) -> str:
    return hashlib.sha256(pyproject).hexdigest()[:16]


def closure(extras: set[str], project: dict[str, object]) -> set[str]:
    """`extras` and every extra of this distribution they name (`vss-serving[serving,torch]`)."""
    name = str(project["name"])
    optional = project.get("optional-dependencies", {})
    assert isinstance(optional, dict)
    unknown = extras - set(optional)
    if unknown:
        raise SystemExit(f"pyproject.toml has no extra {sorted(unknown)}; it has {sorted(optional)}")
    self_reference = re.compile(rf"^\s*{re.escape(name)}\s*\[([^\]]*)\]", re.IGNORECASE)
    found, todo = set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in found:
            continue
        found.add(extra)
        for requirement in optional[extra]:
            match = self_reference.match(requirement)
            if match:
                todo += [e.strip() for e in match[1].split(",") if e.strip()]
    return found


def without_dependencies(extras: set[str], pyproject: dict[str, object]) -> list[str]:
    """The `[tool.vss.no-deps]` packages of these extras, in a stable order."""
    tool = pyproject.get("tool", {})
    table = tool.get("vss", {}).get("no-deps", {}) if isinstance(tool, dict) else {}
    return sorted({package for extra in extras for package in table.get(extra, [])})


def stamped(venv: Path, key: str) -> set[str]:
    prefix = f"{STAMP_PREFIX}{key}-"
    return {p.name[len(prefix):] for p in venv.glob(f"{prefix}*")} if venv.is_dir() else set()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    venv, wanted = Path(argv[0]), {e.strip() for e in argv[1].split(",") if e.strip()}
    text = PYPROJECT.read_bytes()
    pyproject = tomllib.loads(text.decode())
    key, project = deps_key(text), pyproject["project"]
    needed = closure(wanted, project)
    have = stamped(venv, key)
    if needed <= have:
        return 0
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    extras = sorted(wanted | have)
    print(f"installing the dependencies of [{','.join(extras)}] into {venv}", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[{','.join(extras)}]"], check=True)
    alone = without_dependencies(closure(set(extras), project), pyproject)
    if alone:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *alone], check=True)
    for old in venv.glob(f"{STAMP_PREFIX}*"):
        if not old.name.startswith(f"{STAMP_PREFIX}{key}-"):
            old.unlink()
    for extra in closure(set(extras), project):
        (venv / f"{STAMP_PREFIX}{key}-{extra}").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
