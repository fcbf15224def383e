"""Provider selection is tested with injected availability, because no machine here has a GPU: the
real CUDA/TensorRT sessions run in benchmarks/gpu.sh on an NVIDIA machine."""

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.onnx_graphs import colour_cell_detector, save
from vss_api.serving_flags import Normalization
from vss_predictors.errors import UnsupportedModel
from vss_predictors.onnx_runtime import CPU, CUDA, TENSORRT, OnnxRuntime, gpu_libraries_present, select_providers

ALL = [TENSORRT, CUDA, CPU]


def test_gpu_device_prefers_tensorrt_then_cuda_then_cpu_when_all_are_present() -> None:
    assert select_providers("gpu", ALL, {TENSORRT: True, CUDA: True}) == [TENSORRT, CUDA, CPU]


def test_gpu_device_without_tensorrt_libraries_uses_cuda_then_cpu() -> None:
    assert select_providers("gpu", ALL, {TENSORRT: False, CUDA: True}) == [CUDA, CPU]


def test_gpu_device_with_no_driver_falls_back_to_cpu() -> None:
    assert select_providers("gpu", ALL, {TENSORRT: False, CUDA: False}) == [CPU]


def test_a_cpu_only_build_of_onnxruntime_serves_gpu_requests_on_cpu() -> None:
    assert select_providers("gpu", [CPU], {TENSORRT: True, CUDA: True}) == [CPU]


def test_cpu_device_never_asks_for_gpu_providers() -> None:
    assert select_providers("cpu", ALL, {TENSORRT: True, CUDA: True}) == [CPU]


def test_a_gpu_model_on_this_machine_reports_the_provider_it_really_got(tmp_path: Path) -> None:
    path = save(colour_cell_detector(), tmp_path / "m.onnx")
    runtime = OnnxRuntime(path, device="gpu", normalization=Normalization())
    present = gpu_libraries_present()
    assert runtime.info.providers[0] == (CUDA if present[CUDA] else CPU)
    assert runtime.info.device == ("gpu" if present[CUDA] else "cpu")
    assert runtime.info.metadata["stride"] == "32"


def test_the_runtime_reports_dynamic_dimensions_as_minus_one(tmp_path: Path) -> None:
    runtime = OnnxRuntime(save(colour_cell_detector(), tmp_path / "m.onnx"), normalization=Normalization())
    (inp,) = runtime.inputs
    assert (inp.name, inp.datatype, inp.shape) == ("images", "UINT8", (-1, -1, -1, 3))
    out = runtime.run({"images": np.zeros((2, 64, 96, 3), np.uint8)})
    assert out["output0"].shape == (2, 7, 6)


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x80\x04not a protobuf")
    with pytest.raises(UnsupportedModel, match="not a readable ONNX model"):
        OnnxRuntime(bad)
    with pytest.raises(UnsupportedModel, match=r"\.onnx"):
        OnnxRuntime(tmp_path / "model.pkl")
