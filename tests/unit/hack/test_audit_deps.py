"""hack/audit_deps.py, the offline dependency audit `make test` runs: OSV ranges are read as OSV defines them,
only what the images install is audited, and an affected version fails the audit unless excepted with a
reason. The advisory documents here are written for the test, in the PyPA database's format."""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", ROOT / "hack" / "audit_deps.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_deps"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


audit_deps = _load()


def _document(package: str, *events: dict[str, str], versions: tuple[str, ...] = (),
              advisory_id: str = "PYSEC-0000-1", withdrawn: str | None = None) -> dict[str, object]:
    document: dict[str, object] = {
        "id": advisory_id, "details": "A flaw.", "aliases": ["CVE-0000-1"],
        "affected": [{"package": {"name": package, "ecosystem": "PyPI"},
                      "ranges": [{"type": "ECOSYSTEM", "events": list(events)}], "versions": list(versions)}]}
    if withdrawn:
        document["withdrawn"] = withdrawn
    return document


def _advisory(*events: dict[str, str], versions: tuple[str, ...] = ()) -> object:
    [advisory] = audit_deps.parse_advisory(_document("Some_Package", *events, versions=versions))
    return advisory


def test_a_version_from_introduced_up_to_fixed_is_affected_and_fixed_itself_is_not() -> None:
    advisory = _advisory({"introduced": "0"}, {"fixed": "2.3.0"})

    assert advisory.affects("1.0") and advisory.affects("2.2.9") and advisory.affects("2.3.0rc1")
    assert not advisory.affects("2.3.0") and not advisory.affects("3.0")


def test_last_affected_includes_that_version_and_a_second_introduced_reopens_the_range() -> None:
    advisory = _advisory({"introduced": "1.0"}, {"last_affected": "1.4"}, {"introduced": "2.0"}, {"fixed": "2.1"})

    assert [advisory.affects(v) for v in ("0.9", "1.0", "1.4", "1.5", "2.0.5", "2.1")] == [
        False, True, True, False, True, False]


def test_a_version_listed_by_name_is_affected_even_outside_every_range() -> None:
    assert _advisory({"introduced": "5.0"}, versions=("1.2.post1",)).affects("1.2.post1")


def test_a_withdrawn_advisory_affects_nothing() -> None:
    [advisory] = audit_deps.parse_advisory(
        _document("pkg", {"introduced": "0"}, withdrawn="2024-01-01T00:00:00Z"))

    assert not advisory.affects("1.0")


def test_package_names_are_compared_in_their_canonical_form() -> None:
    advisory = _advisory({"introduced": "0"})

    assert advisory.package == "some-package"
    assert audit_deps.audit({"some-package": "1.0"}, {"some-package": [advisory]})


def test_the_runtime_closure_holds_what_the_images_install_and_none_of_the_test_tools() -> None:
    installed = audit_deps.runtime_distributions()

    for shipped in ("kserve", "kopf", "kubernetes", "aiohttp", "torch", "numpy", "pydantic", "grpcio", "av",
                    "trackers"):
        assert installed[shipped] == metadata.version(shipped)
    for tool in ("pytest", "ruff", "mypy", "hypothesis", "tritonclient", "pyinstrument"):
        assert tool not in installed


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A one-advisory database that affects the installed pydantic."""
    installed = metadata.version("pydantic")
    folder = tmp_path / "db" / "vulns" / "pydantic"
    folder.mkdir(parents=True)
    (folder / "PYSEC-0000-1.yaml").write_text(yaml.safe_dump(
        _document("pydantic", {"introduced": "0"}, {"fixed": installed + ".post999"})))
    return tmp_path / "db"


def test_an_affected_runtime_dependency_fails_the_audit_and_is_named(
        database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert audit_deps.main(["--db", str(database), "--exceptions", str(tmp_path / "none.toml")]) == 1

    out = capsys.readouterr().out
    assert "pydantic" in out and "PYSEC-0000-1 (CVE-0000-1)" in out and "AFFECTED" in out


def test_an_exception_with_a_reason_lets_the_audit_pass_and_turns_stale_when_nothing_matches(
        database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exceptions = tmp_path / "exceptions.toml"
    exceptions.write_text('[exceptions]\n"PYSEC-0000-1" = "we never call the affected function"\n')

    assert audit_deps.main(["--db", str(database), "--exceptions", str(exceptions)]) == 0
    assert "excepted: we never call the affected function" in capsys.readouterr().out

    (database / "vulns" / "pydantic" / "PYSEC-0000-1.yaml").unlink()
    (database / "vulns" / "pydantic" / "PYSEC-0000-2.yaml").write_text(yaml.safe_dump(
        _document("pydantic", {"introduced": "0"}, {"fixed": "0.1"}, advisory_id="PYSEC-0000-2")))
    assert audit_deps.main(["--db", str(database), "--exceptions", str(exceptions)]) == 1
    assert "stale exception PYSEC-0000-1" in capsys.readouterr().out


def test_an_empty_database_is_an_error_not_a_clean_audit(tmp_path: Path) -> None:
    assert audit_deps.main(["--db", str(tmp_path), "--exceptions", str(tmp_path / "none.toml")]) == 2


def test_the_committed_advisories_leave_no_runtime_dependency_open() -> None:
    assert audit_deps.main([]) == 0
