"""No code of ours that serves, operates or builds models can run code hidden in a file or a request: no pickle
(nor joblib, dill, cloudpickle, shelve, marshal, pandas' read_pickle), no `torch.load`, no `yaml.load` with a
loader that builds Python objects, no `numpy.load(allow_pickle=True)`, no `eval`/`exec`/`compile` of strings.
Read from the source of every module (function-level imports and aliases included).

TorchScript archives are read with `torch.jit.load`, whose unpickler is TorchScript's own (tensors and
TorchScript types only, no arbitrary globals); ONNX files are protobuf."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"vss_api": "api", "vss_cli": "cli", "vss_operator": "operator", "vss_predictors": "predictors",
            "vss_transformers": "transformers", "vss_models": "models", "vss_streams": "streams"}
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}
# Dotted names whose call deserialises objects: module alias resolved, so `import torch as t; t.load` counts.
UNSAFE_CALLS = {"torch.load", "yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all",
                "yaml.full_load", "yaml.full_load_all", "pandas.read_pickle", "numpy.lib.format.read_array"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def unsafe_uses(source: str) -> list[str]:
    """Each unsafe import or call in `source`, as 'line: what'."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {"np": "numpy", "pd": "pandas"}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
                if top in UNSAFE_MODULES:
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if node.module.split(".")[0] in UNSAFE_MODULES:
                found.append(f"{node.lineno}: from {node.module} import ...")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if isinstance(node.func, ast.Name) and node.func.id in UNSAFE_BUILTINS and node.func.id not in aliases:
            found.append(f"{node.lineno}: {node.func.id}()")
        elif name in UNSAFE_CALLS and not (name and name.startswith("yaml.load") and _safe_loader(node, aliases)):
            found.append(f"{node.lineno}: {name}()")
        elif name == "numpy.load" and any(k.arg == "allow_pickle" and not (
                isinstance(k.value, ast.Constant) and k.value.value is False) for k in node.keywords):
            found.append(f"{node.lineno}: numpy.load(allow_pickle=...)")
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def _safe_loader(call: ast.Call, aliases: dict[str, str]) -> bool:
    loader = next((k.value for k in call.keywords if k.arg == "Loader"), call.args[1] if len(call.args) > 1 else None)
    name = _dotted(loader, aliases) if loader is not None else None
    return name is not None and name.rsplit(".", 1)[-1] in SAFE_YAML_LOADERS


def _modules() -> list[Path]:
    return sorted(p for folder in PACKAGES.values() for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_of_ours_deserialises_objects_or_evaluates_strings(path: Path) -> None:
    assert unsafe_uses(path.read_text()) == []


def test_every_package_is_scanned() -> None:
    scanned = {p.relative_to(ROOT).parts[1] for p in _modules()}
    assert scanned >= set(PACKAGES)


@pytest.mark.parametrize(("source", "expected"), [
    ("import pickle", ["1: import pickle"]),
    ("import joblib as jl", ["1: import joblib"]),
    ("from dill import loads", ["1: from dill import ..."]),
    ("import torch\ntorch.load('m.pt')", ["2: torch.load()"]),
    ("import torch as t\nt.load(f)", ["2: torch.load()"]),
    ("from torch import load\nload(f)", ["2: torch.load()"]),
    ("import yaml\nyaml.load(text)", ["2: yaml.load()"]),
    ("import yaml\nyaml.load(text, Loader=yaml.FullLoader)", ["2: yaml.load()"]),
    ("import yaml\nyaml.unsafe_load(text)", ["2: yaml.unsafe_load()"]),
    ("import numpy as np\nnp.load(f, allow_pickle=True)", ["2: numpy.load(allow_pickle=...)"]),
    ("import pandas as pd\npd.read_pickle(f)", ["2: pandas.read_pickle()"]),
    ("eval(expression)", ["1: eval()"]),
    ("exec(code)", ["1: exec()"]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_the_scan_finds_each_unsafe_form(source: str, expected: list[str]) -> None:
    assert unsafe_uses(source) == expected


@pytest.mark.parametrize("source", [
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.load(text, yaml.CSafeLoader)",
    "import numpy as np\nnp.load(f)",
    "import numpy as np\nnp.load(f, allow_pickle=False)",
    "import torch\ntorch.jit.load(path)",
    "model.eval()",
    "import onnx\nonnx.load(path)",
])
def test_the_scan_lets_safe_forms_pass(source: str) -> None:
    assert unsafe_uses(textwrap.dedent(source)) == []
