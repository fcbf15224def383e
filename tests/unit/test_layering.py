"""The package boundaries, read from the source (every import, function-level ones included) and checked by
importing each plane in a fresh interpreter with the other planes' libraries made unimportable.

    vss_cli ──▶ vss_operator, vss_predictors, vss_transformers, vss_streams, vss_models ──▶ vss_api
                vss_models ──▶ vss_predictors, vss_transformers, vss_streams (it trains and evaluates through them)

`python hack/import_graph.py --modules` prints the same picture."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"vss_api": "api", "vss_cli": "cli", "vss_operator": "operator", "vss_predictors": "predictors",
           "vss_transformers": "transformers", "vss_models": "models", "vss_streams": "streams"}
PLANES = ("vss_operator", "vss_predictors", "vss_transformers", "vss_streams")
# Which of our packages each may import; everything else of ours is off limits.
ALLOWED = {
    "vss_api": set(),
    "vss_operator": {"vss_api"},
    "vss_predictors": {"vss_api"},
    "vss_transformers": {"vss_api"},
    "vss_streams": {"vss_api"},
    "vss_models": {"vss_api", "vss_predictors", "vss_transformers", "vss_streams"},
    "vss_cli": {"vss_api", "vss_operator", "vss_predictors", "vss_transformers", "vss_models", "vss_streams"},
}
# Libraries that do I/O: none may be reachable from the operator's pure decision code.
IO_LIBRARIES = ("aiohttp", "asyncio", "kopf", "kubernetes", "urllib3", "requests", "httpx", "socket", "grpc",
                "subprocess", "prometheus_client", "kserve", "urllib.request", "http.client")
PURE_OPERATOR_MODULES = ("vss_operator.rollout", "vss_operator.status", "vss_operator.render",
                         "vss_operator.stream_render",
                         "vss_operator.crd", "vss_operator.promql", "vss_operator.objects")
# What each image leaves out (pyproject extras): a plane that reaches one of these would not start there.
NOT_IN_IMAGE = {
    "vss_operator": {"kserve", "numpy", "onnxruntime", "onnx", "cv2", "simplejpeg", "torch", "grpc", "pynvml",
                     "opentelemetry"},
    "vss_predictors": {"kopf", "kubernetes", "aiohttp"},
    "vss_transformers": {"kopf", "kubernetes", "aiohttp", "torch", "onnxruntime"},
    "vss_api": {"kopf", "kubernetes", "aiohttp", "torch", "onnxruntime", "cv2"},
    # The stream worker reads the v2 gRPC stubs KServe generates (kserve.protocol.grpc), so it carries KServe.
    "vss_streams": {"kopf", "kubernetes", "torch", "onnxruntime"},
}
# KServe itself imports these (its KServeClient), so the serving images carry them even though our serving
# code never imports them: the import check can only leave them out of the operator's.
KSERVE_BRINGS = {"kubernetes", "aiohttp"}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    module: str  # dotted name imported
    line: int


def _module_name(package: str, path: Path) -> str:
    root = ROOT / FOLDERS[package]
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(package, path): path
            for package, folder in FOLDERS.items() for path in sorted((ROOT / folder / package).rglob("*.py"))}


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    found: list[Import] = []
    for node in ast.walk(ast.parse(modules()[module].read_text())):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(Import(module, node.module, node.lineno))
            # `from vss_api import metrics` imports the module vss_api.metrics
            found += [Import(module, f"{node.module}.{alias.name}", node.lineno) for alias in node.names
                      if f"{node.module}.{alias.name}" in modules()]
    return tuple(found)


def _top(name: str) -> str:
    return name.split(".")[0]


def reachable(start: Iterable[str]) -> set[str]:
    """Our modules reachable from `start` through imports (package __init__s included)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen or name not in modules():
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += [i.module for i in imports_of(name) if i.module in modules()]
    return seen


def third_party_reached(start: Iterable[str]) -> dict[str, list[str]]:
    """Libraries imported by the modules reachable from `start`, each with where."""
    out: dict[str, list[str]] = {}
    for name in sorted(reachable(start)):
        for imp in imports_of(name):
            if _top(imp.module) not in FOLDERS:
                out.setdefault(_top(imp.module), []).append(f"{name}:{imp.line}")
    return out


def offending_imports(package: str) -> list[str]:
    allowed = ALLOWED[package] | {package}
    return [f"{imp.importer}:{imp.line} imports {imp.module}"
            for name in modules() if _top(name) == package
            for imp in imports_of(name) if _top(imp.module) in FOLDERS and _top(imp.module) not in allowed]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_packages_below_it(package: str) -> None:
    assert offending_imports(package) == []


@pytest.mark.parametrize("plane", PLANES)
def test_each_plane_depends_on_the_contract_package(plane: str) -> None:
    assert any(_top(imp.module) == "vss_api" for name in modules() if _top(name) == plane
               for imp in imports_of(name))


def test_the_boundary_check_names_an_import_against_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule is not vacuous: an import of the operator from the transformer is reported with its line."""
    real = imports_of
    bad = Import("vss_transformers.tasks", "vss_operator.render", 1)
    monkeypatch.setattr(sys.modules[__name__], "imports_of",
                        lambda m: (*real(m), bad) if m == "vss_transformers.tasks" else real(m))
    assert offending_imports("vss_transformers") == ["vss_transformers.tasks:1 imports vss_operator.render"]


def test_no_operator_module_but_kube_imports_the_kubernetes_client() -> None:
    offenders = [f"{imp.importer}:{imp.line}" for name in modules() if _top(name) == "vss_operator"
                 and name != "vss_operator.kube" for imp in imports_of(name) if _top(imp.module) == "kubernetes"]
    assert offenders == []


@pytest.mark.parametrize("module", PURE_OPERATOR_MODULES)
def test_the_operator_decision_code_reaches_no_io_library(module: str) -> None:
    """Not directly and not through what it imports (rollout once reached aiohttp through prometheus.py)."""
    io = [f"{imp.importer}:{imp.line} imports {imp.module}" for name in sorted(reachable([module]))
          for imp in imports_of(name) if any(imp.module == lib or imp.module.startswith(lib + ".")
                                             for lib in IO_LIBRARIES)]
    assert io == []
    assert not reachable([module]) & {"vss_operator.kube", "vss_operator.prometheus", "vss_operator.handlers"}


@pytest.mark.parametrize("package", sorted(NOT_IN_IMAGE))
def test_no_package_reaches_a_library_its_image_leaves_out(package: str) -> None:
    reached = third_party_reached(name for name in modules() if _top(name) == package)
    assert {lib: where for lib, where in reached.items() if lib in NOT_IN_IMAGE[package]} == {}


IMPORT_BLOCKED = textwrap.dedent("""
    import importlib, importlib.abc, pkgutil, sys
    blocked = set(sys.argv[1].split(","))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ImportError(f"{name} is not installed in this image")
            return None
    sys.meta_path.insert(0, Block())
    package = importlib.import_module(sys.argv[2])
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.split(".")[-1] != "__main__":
            importlib.import_module(info.name)
    print("imported", sys.argv[2])
""")


@pytest.mark.parametrize("package", sorted(NOT_IN_IMAGE))
def test_every_module_of_a_plane_imports_without_the_other_planes_libraries(package: str) -> None:
    """What the static reading says, checked by the interpreter: every module of the package imports with the
    libraries its image leaves out made unimportable (module-level imports; the static test covers the rest)."""
    blocked = ",".join(sorted(NOT_IN_IMAGE[package] - (set() if package == "vss_operator" else KSERVE_BRINGS)))
    done = subprocess.run([sys.executable, "-c", IMPORT_BLOCKED, blocked, package],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"imported {package}"
