"""hack/install_extras.py, which `make serve` and `make test` install through: the extras an extra names are
stamped with it, so serve, test, serve install once each; a changed pyproject.toml installs again. pip is a
stand-in that records what it is asked (the real installs are measured by hand, see the Makefile)."""

from __future__ import annotations

import importlib.util
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_extras", ROOT / "hack" / "install_extras.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_extras = _load()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
KEY = install_extras.deps_key((ROOT / "pyproject.toml").read_bytes())


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A virtualenv whose python only logs its arguments, one call a line."""
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "calls"}\n')
    python.chmod(0o755)
    return tmp_path / "venv"


def _installs(venv: Path) -> list[str]:
    calls = venv.parent / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [line.rsplit("[", 1)[1].rstrip("]") for line in lines if " -e " in line]


def _stamps(venv: Path) -> set[str]:
    return {p.name for p in venv.glob(".deps-*")}


def test_the_test_extras_name_every_plane_and_serving_names_nothing_else() -> None:
    assert install_extras.closure({"dev", "bench"}, PROJECT) == {
        "dev", "bench", "operator", "serving", "torch", "models", "streams", "cli"}
    assert install_extras.closure({"serving"}, PROJECT) == {"serving"}


def test_an_extra_pyproject_lacks_is_refused_with_the_ones_it_has() -> None:
    with pytest.raises(SystemExit, match="no extra"):
        install_extras.closure({"servng"}, PROJECT)


def test_serve_then_test_then_serve_installs_once_each_and_test_keeps_serving(venv: Path) -> None:
    assert install_extras.main([str(venv), "serving"]) == 0
    assert install_extras.main([str(venv), "dev,bench"]) == 0
    assert install_extras.main([str(venv), "serving"]) == 0
    assert install_extras.main([str(venv), "serving,torch"]) == 0

    assert _installs(venv) == ["serving", "bench,dev,serving"]
    assert _stamps(venv) == {f".deps-{KEY}-{e}"
                             for e in ("dev", "bench", "operator", "serving", "torch", "models", "streams", "cli")}


def test_stamps_of_another_pyproject_are_dropped_and_do_not_count(venv: Path) -> None:
    (venv / ".deps-0123456789abcdef-serving").touch()
    (venv / ".deps-0123456789abcdef").touch()  # the single stamp of the Makefile before extras had their own

    assert install_extras.main([str(venv), "serving"]) == 0

    assert _installs(venv) == ["serving"]
    assert _stamps(venv) == {f".deps-{KEY}-serving"}


def test_a_failed_install_leaves_no_stamp(venv: Path) -> None:
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")

    with pytest.raises(subprocess.CalledProcessError):
        install_extras.main([str(venv), "serving"])

    assert _stamps(venv) == set()


def test_packages_named_no_deps_are_installed_alone_after_the_extra_that_names_them(venv: Path) -> None:
    assert install_extras.main([str(venv), "serving"]) == 0
    assert install_extras.main([str(venv), "streams"]) == 0

    calls = (venv.parent / "calls").read_text().splitlines()
    alone = [line for line in calls if "--no-deps" in line]
    assert alone == ["-m pip install -q --no-deps trackers==2.6.1"]
    assert calls.index(alone[0]) > max(i for i, line in enumerate(calls) if " -e " in line and "streams" in line)
