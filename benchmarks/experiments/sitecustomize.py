"""Trial fixes, switched on per benchmark run with VSS_BENCH_EXPERIMENTS (comma-separated), applied to
every Python process the run starts (this folder is put first on their PYTHONPATH): a proposed change
to the lead's code measured end to end before anyone edits that code.

  ort-no-spin   the predictor runtime's ONNX Runtime sessions get session.intra_op.allow_spinning=0
                (vss_predictors.onnx_runtime.OnnxRuntime only: the KServe docs' baselines keep theirs)
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

EXPERIMENTS = {e for e in os.environ.get("VSS_BENCH_EXPERIMENTS", "").split(",") if e}


def _no_spin(module: ModuleType) -> None:
    runtime = module.OnnxRuntime
    original = runtime._open

    def _open(model: bytes, options: Any, wanted: list[str], cache_dir: Any) -> Any:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return original(model, options, wanted, cache_dir)

    runtime._open = staticmethod(_open)


PATCHES = {"vss_predictors.onnx_runtime": [_no_spin] if "ort-no-spin" in EXPERIMENTS else []}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not PATCHES.get(name):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module: ModuleType) -> None:
            exec_module(module)
            for patch in PATCHES[name]:
                patch(module)

        loader.exec_module = patched  # type: ignore[method-assign]
        return spec


if any(PATCHES.values()):
    sys.meta_path.insert(0, _PatchAfterImport())
