"""The GPU check's PyTorch fallback computes what ONNX Runtime computes on the same graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from benchmarks.standin_models import resnet18_graph, yolov8n_graph
from vss_api.serving_flags import Normalization
from vss_predictors.prelude import add_uint8_nhwc_prelude


@pytest.mark.parametrize(("model", "shape"), [(yolov8n_graph(num_classes=4), (1, 64, 96, 3)),
                                              (resnet18_graph(num_classes=5, size=32), (2, 32, 32, 3))])
def test_torchscript_of_the_graph_with_its_uint8_prelude_matches_onnx_runtime(
        model: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    from benchmarks.onnx_in_torch import traced

    graph = add_uint8_nhwc_prelude(model, Normalization())
    x = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"images": x})
    with torch.inference_mode():
        got = traced(graph, torch.from_numpy(x), torch.float32)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_an_op_it_does_not_know_is_named_in_the_error() -> None:
    from benchmarks.onnx_in_torch import OnnxInTorch, UnsupportedOp

    node = onnx.helper.make_node("Einsum", ["images"], ["output0"], equation="ij->ji")
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("images", 1, [2, 2])],
                                   [onnx.helper.make_tensor_value_info("output0", 1, [2, 2])])
    with pytest.raises(UnsupportedOp, match="Einsum"):
        OnnxInTorch(onnx.helper.make_model(graph))
