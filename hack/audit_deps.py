"""Audit the runtime dependencies (what the images carry) against known vulnerabilities, offline.

pip-audit needs PyPI's per-version JSON API or api.osv.dev; neither is reachable from the machines this project
is built on (the package registry serves the per-project JSON only). So the advisories of the PyPA advisory
database (OSV format, CC-BY-4.0) for the distributions we ship are kept under security/advisories/, refreshed
from a checkout of https://github.com/pypa/advisory-database with `--refresh-from`, and matched here against the
versions installed in the running interpreter.

    python hack/audit_deps.py                          # exit 1 when a runtime dependency is affected
    python hack/audit_deps.py --refresh-from CHECKOUT  # copy in the advisories of our runtime dependencies

An advisory that does not apply to how we use a package is listed, with the reason, in
security/audit-exceptions.toml; an exception whose advisory no longer matches is reported as stale.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import shutil
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
DB = ROOT / "security" / "advisories"
EXCEPTIONS = ROOT / "security" / "audit-exceptions.toml"
PROJECT = "vss-serving"
# The extras the operator, predictor, transformer and stream worker images install.
RUNTIME_EXTRAS = ("operator", "serving", "torch", "streams")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Advisory:
    id: str
    package: str
    aliases: tuple[str, ...]
    summary: str
    versions: frozenset[str]
    ranges: tuple[tuple[tuple[str, str], ...], ...]  # ECOSYSTEM ranges: (event, version) in order
    withdrawn: bool

    def affects(self, version: str) -> bool:
        if self.withdrawn:
            return False
        if version in self.versions:
            return True
        try:
            installed = Version(version)
        except InvalidVersion:
            return False
        return any(_in_range(installed, events) for events in self.ranges)


def _in_range(installed: Version, events: tuple[tuple[str, str], ...]) -> bool:
    """OSV's ECOSYSTEM range: affected from each `introduced` up to (not incl.) `fixed` or incl. `last_affected`."""
    affected = False
    for kind, value in events:
        at = Version("0") if value == "0" else _version(value)
        if at is None:
            continue
        if kind == "introduced" and installed >= at:
            affected = True
        elif (kind == "fixed" and installed >= at) or (kind == "last_affected" and installed > at):
            affected = False
    return affected


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def parse_advisory(document: Mapping[str, object]) -> list[Advisory]:
    """One OSV document gives an Advisory per PyPI package it names."""
    advisories = []
    for affected in document.get("affected") or []:  # type: ignore[attr-defined]
        package = affected.get("package") or {}
        if package.get("ecosystem") != "PyPI":
            continue
        ranges = tuple(
            tuple((kind, str(value)) for event in r.get("events", []) for kind, value in event.items())
            for r in affected.get("ranges") or [] if r.get("type") == "ECOSYSTEM")
        advisories.append(Advisory(
            id=str(document["id"]), package=canonical(str(package["name"])),
            aliases=tuple(str(a) for a in document.get("aliases") or []),  # type: ignore[attr-defined]
            summary=str(document.get("summary") or document.get("details") or "").strip().split("\n")[0][:120],
            versions=frozenset(str(v) for v in affected.get("versions") or []),
            ranges=ranges, withdrawn=bool(document.get("withdrawn"))))
    return advisories


def load_advisories(db: Path) -> dict[str, list[Advisory]]:
    by_package: dict[str, list[Advisory]] = {}
    for path in sorted(db.glob("vulns/*/*.yaml")):
        for advisory in parse_advisory(yaml.safe_load(path.read_text())):
            by_package.setdefault(advisory.package, []).append(advisory)
    return by_package


def runtime_distributions(project: str = PROJECT, extras: Iterable[str] = RUNTIME_EXTRAS) -> dict[str, str]:
    """The installed distributions `project[extras]` pulls in, transitively: {canonical name: version}."""
    found: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(project, frozenset(extras))]
    # what pyproject installs with --no-deps beside these extras (hack/install_extras.py) ships too
    no_deps = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("vss", {}).get("no-deps", {})
    pending += [(Requirement(p).name, frozenset()) for e in extras for p in no_deps.get(e, [])]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, wanted = pending.pop()
        if (canonical(name), wanted) in seen:
            continue
        seen.add((canonical(name), wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement whose marker excludes this platform, or an optional one not installed
        if canonical(name) != canonical(project):
            found[canonical(name)] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
                continue
            pending.append((requirement.name, frozenset(requirement.extras)))
    return found


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory: Advisory


def audit(installed: Mapping[str, str], advisories: Mapping[str, list[Advisory]]) -> list[Finding]:
    return [Finding(name, version, a) for name, version in sorted(installed.items())
            for a in advisories.get(name, []) if a.affects(version)]


def refresh(checkout: Path, names: Iterable[str], db: Path = DB) -> int:
    """Copy the advisories of `names` from a pypa/advisory-database checkout; returns how many files."""
    if db.exists():
        shutil.rmtree(db / "vulns", ignore_errors=True)
    copied = 0
    for name in sorted(set(names)):
        source = checkout / "vulns" / name
        if not source.is_dir():
            continue
        shutil.copytree(source, db / "vulns" / name)
        copied += sum(1 for _ in source.glob("*.yaml"))
    shutil.copy(checkout / "LICENSE", db / "LICENSE")
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=DB)
    parser.add_argument("--exceptions", type=Path, default=EXCEPTIONS)
    parser.add_argument("--refresh-from", type=Path, metavar="CHECKOUT")
    args = parser.parse_args(argv)

    installed = runtime_distributions()
    if not installed:
        print(f"{PROJECT} is not installed in this interpreter: nothing to audit", file=sys.stderr)
        return 2
    if args.refresh_from:
        print(f"copied {refresh(args.refresh_from, installed, args.db)} advisories into {args.db}")
    advisories = load_advisories(args.db)
    if not advisories:
        print(f"no advisories under {args.db}/vulns: refresh them first", file=sys.stderr)
        return 2
    exceptions: dict[str, str] = tomllib.loads(args.exceptions.read_text()).get("exceptions", {}) \
        if args.exceptions.exists() else {}

    findings = audit(installed, advisories)
    open_findings = [f for f in findings if f.advisory.id not in exceptions]
    stale = sorted(set(exceptions) - {f.advisory.id for f in findings})
    print(f"{len(installed)} runtime distributions, {sum(map(len, advisories.values()))} advisories "
          f"({args.db.relative_to(ROOT) if args.db.is_relative_to(ROOT) else args.db})")
    for f in findings:
        verdict = f"excepted: {exceptions[f.advisory.id]}" if f.advisory.id in exceptions else "AFFECTED"
        aliases = ", ".join(f.advisory.aliases)
        print(f"  {f.package} {f.version}  {f.advisory.id} ({aliases})  {f.advisory.summary}\n    {verdict}")
    for advisory_id in stale:
        print(f"  stale exception {advisory_id}: no installed version is affected any more; remove it")
    print(f"{len(open_findings)} open, {len(findings) - len(open_findings)} excepted, {len(stale)} stale")
    return 1 if open_findings or stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
