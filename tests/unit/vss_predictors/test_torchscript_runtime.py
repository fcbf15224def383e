"""TorchScript serving on CPU; the same code maps to `cuda` when torch sees a GPU (benchmarks/gpu.sh)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vss_api.serving_flags import Normalization
from vss_predictors.errors import UnsupportedModel
from vss_predictors.torchscript_runtime import TorchScriptRuntime

NAMES = ["red", "green", "blue"]


class MeanColour(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _save(tmp_path: Path) -> Path:
    path = tmp_path / "colour.pt"
    torch.jit.save(torch.jit.script(MeanColour()), str(path), _extra_files={"names": json.dumps(NAMES)})
    return path


def test_a_torchscript_model_takes_uint8_pixels_and_normalises_them_on_its_device(tmp_path: Path) -> None:
    runtime = TorchScriptRuntime(_save(tmp_path), normalization=Normalization())
    pixels = np.zeros((2, 8, 8, 3), np.uint8)
    pixels[0, ..., 1] = 255
    out = runtime.run({"images": pixels})["output0"]
    np.testing.assert_allclose(out, [[0, 1, 0], [0, 0, 0]], atol=1e-6)
    assert runtime.inputs[0].datatype == "UINT8"
    assert runtime.outputs[0].shape == (-1, 3)
    assert json.loads(runtime.info.metadata["names"]) == NAMES


def test_asking_for_a_gpu_without_cuda_runs_on_cpu_and_says_so(tmp_path: Path) -> None:
    runtime = TorchScriptRuntime(_save(tmp_path), device="gpu", normalization=Normalization())
    assert runtime.info.device == ("gpu" if torch.cuda.is_available() else "cpu")


def test_a_pickled_module_is_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1)}, str(path))  # a plain pickle archive, not TorchScript
    with pytest.raises(UnsupportedModel, match="not a TorchScript archive"):
        TorchScriptRuntime(path)


def test_only_torchscript_file_names_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match="TorchScript"):
        TorchScriptRuntime(tmp_path / "model.pkl")
