"""Graph surgery that moves input normalisation into an ONNX model.

The transformer sends UINT8 NHWC pixels (1.2 MB per 640x640 frame instead of 4.9 MB of FP32); a prelude of
Transpose → Cast → Mul → Add in front of the model's own input does the layout change and
`(x / 255 - mean) / std` on the device that runs the model, fused by the runtime's optimiser."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vss_api.serving_flags import Normalization


def image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto | None:
    """The model's only input when it is a float NCHW RGB image, else None (no prelude then)."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        return None
    tensor = inputs[0].type.tensor_type
    dims = tensor.shape.dim
    if tensor.elem_type != TensorProto.FLOAT or len(dims) != 4:
        return None
    if not dims[1].HasField("dim_value") or dims[1].dim_value != 3:
        return None
    found: onnx.ValueInfoProto = inputs[0]
    return found


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str:
    return d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")


def add_uint8_nhwc_prelude(model: onnx.ModelProto, norm: Normalization) -> onnx.ModelProto:
    """A copy of `model` whose input, under the same name, is UINT8 [N, H, W, 3] RGB."""
    original = image_input(model)
    if original is None:
        raise ValueError("the model has no single float NCHW image input to put a prelude in front of")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    name = original.name
    inner = f"{name}__vss_normalized"
    for node in graph.node:
        node.input[:] = [inner if i == name else i for i in node.input]
    for output in graph.output:
        if output.name == name:  # an identity model: keep its output wired
            output.name = inner
    dims = original.type.tensor_type.shape.dim
    n, h, w = _dim(dims[0]), _dim(dims[2]), _dim(dims[3])
    new_input = helper.make_tensor_value_info(name, TensorProto.UINT8, [n, h, w, 3])
    kept: Sequence[onnx.ValueInfoProto] = [i for i in graph.input if i.name != name]
    del graph.input[:]
    graph.input.extend([new_input, *kept])
    scale, bias = scale_and_bias(norm)
    graph.initializer.extend([
        numpy_helper.from_array(scale, f"{name}__vss_scale"),
        numpy_helper.from_array(bias, f"{name}__vss_bias"),
    ])
    prelude = [
        helper.make_node("Transpose", [name], [f"{name}__vss_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", [f"{name}__vss_nchw"], [f"{name}__vss_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{name}__vss_float", f"{name}__vss_scale"], [f"{name}__vss_scaled"]),
        helper.make_node("Add", [f"{name}__vss_scaled", f"{name}__vss_bias"], [inner]),
    ]
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*prelude, *nodes])
    return out


def scale_and_bias(norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """The prelude's per-channel multiply-add, shaped [1, 3, 1, 1] for NCHW."""
    std = np.asarray(norm.std, dtype=np.float32)
    mean = np.asarray(norm.mean, dtype=np.float32)
    scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1).astype(np.float32)
    bias = (-mean / std).reshape(1, 3, 1, 1).astype(np.float32)
    return scale, bias
