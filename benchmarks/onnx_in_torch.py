"""An ONNX graph run by PyTorch, op by op, then traced to TorchScript: the GPU check's fallback where the
machine has CUDA through PyTorch but no GPU build of ONNX Runtime (an image with `onnxruntime` CPU only).
It covers the ops of the stand-in models, the predictor's UINT8 prelude and common YOLO/classifier
exports; another op raises `UnsupportedOp` naming it. The trace fixes the input shape it was made with,
as a TorchScript export does."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812
from onnx import numpy_helper

Args = list[Any]
Attrs = dict[str, Any]


class UnsupportedOp(RuntimeError):
    pass


def _ints(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def _reshape(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(_ints(shape))]
    return x.reshape(dims)


def _conv(a: Args, k: Attrs) -> torch.Tensor:
    pads = k.get("pads", [0, 0, 0, 0])
    if pads[: len(pads) // 2] != pads[len(pads) // 2:]:
        raise UnsupportedOp("Conv with asymmetric pads")
    out: torch.Tensor = F.conv2d(a[0], a[1], a[2] if len(a) > 2 else None, stride=k.get("strides", 1),
                                 padding=pads[: len(pads) // 2], dilation=k.get("dilations", 1),
                                 groups=k.get("group", 1))
    return out


def _max_pool(a: Args, k: Attrs) -> torch.Tensor:
    pads = k.get("pads", [0, 0, 0, 0])
    out: torch.Tensor = F.max_pool2d(a[0], k["kernel_shape"], k.get("strides", k["kernel_shape"]),
                                     pads[: len(pads) // 2])
    return out


def _resize(a: Args, k: Attrs) -> torch.Tensor:
    if k.get("mode", b"nearest") not in (b"nearest", "nearest"):
        raise UnsupportedOp(f"Resize mode {k.get('mode')!r}")
    scales = a[2] if len(a) > 2 and a[2] is not None and a[2].numel() else None
    if scales is not None:
        return F.interpolate(a[0], scale_factor=[float(s) for s in scales.tolist()[2:]], mode="nearest")
    return F.interpolate(a[0], size=_ints(a[3])[2:], mode="nearest")


def _gemm(a: Args, k: Attrs) -> torch.Tensor:
    x = a[0].t() if k.get("transA") else a[0]
    w = a[1].t() if k.get("transB") else a[1]
    y: torch.Tensor = k.get("alpha", 1.0) * (x @ w)
    if len(a) > 2 and a[2] is not None:
        y = y + k.get("beta", 1.0) * a[2]
    return y


def _slice(a: Args, k: Attrs) -> torch.Tensor:
    x = a[0]
    starts, ends = _ints(a[1]), _ints(a[2])
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        size = x.shape[axis]
        index[axis] = slice(max(-size, min(start, size)), max(-size - 1, min(end, size)), step)
    out: torch.Tensor = x[tuple(index)]
    return out


def _reduce(fn: Callable[..., torch.Tensor]) -> Callable[[Args, Attrs], torch.Tensor]:
    def run(a: Args, k: Attrs) -> torch.Tensor:
        axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else k.get("axes")
        keep = bool(k.get("keepdims", 1))
        if axes is None:
            return fn(a[0])
        return fn(a[0], dim=axes, keepdim=keep)
    return run


OPS: dict[str, Callable[[Args, Attrs], Any]] = {
    "Conv": _conv,
    "Relu": lambda a, k: F.relu(a[0]),
    "Sigmoid": lambda a, k: torch.sigmoid(a[0]),
    "Add": lambda a, k: a[0] + a[1],
    "Sub": lambda a, k: a[0] - a[1],
    "Mul": lambda a, k: a[0] * a[1],
    "Div": lambda a, k: a[0] / a[1],
    "Concat": lambda a, k: torch.cat(a, dim=k["axis"]),
    "Split": lambda a, k: torch.split(a[0], _ints(a[1]), dim=k.get("axis", 0)),
    "MaxPool": _max_pool,
    "Resize": _resize,
    "Reshape": lambda a, k: _reshape(a[0], a[1]),
    "Transpose": lambda a, k: a[0].permute(k["perm"]),
    "Softmax": lambda a, k: torch.softmax(a[0], dim=k.get("axis", -1)),
    "ReduceSum": _reduce(torch.sum),
    "ReduceMean": _reduce(torch.mean),
    "ReduceMax": lambda a, k: _reduce(lambda x, **kw: torch.amax(x, **kw))(a, k),
    "GlobalAveragePool": lambda a, k: a[0].mean(dim=(2, 3), keepdim=True),
    "Flatten": lambda a, k: a[0].flatten(k.get("axis", 1)),
    "Gemm": _gemm,
    "MatMul": lambda a, k: a[0] @ a[1],
    "Shape": lambda a, k: torch.tensor(list(a[0].shape), dtype=torch.int64, device=a[0].device),
    "Gather": lambda a, k: torch.index_select(a[0], k.get("axis", 0), a[1].reshape(-1)).reshape(
        [*a[0].shape[: k.get("axis", 0)], *a[1].shape, *a[0].shape[k.get("axis", 0) + 1:]]),
    "Unsqueeze": lambda a, k: a[0].reshape([*a[0].shape[:_ints(a[1])[0]], 1, *a[0].shape[_ints(a[1])[0]:]])
    if len(_ints(a[1])) == 1 else UnsupportedOp("Unsqueeze of several axes"),
    "Range": lambda a, k: torch.arange(a[0].item(), a[1].item(), a[2].item(), dtype=a[0].dtype,
                                       device=a[0].device),
    "Slice": _slice,
    "Identity": lambda a, k: a[0],
}


class OnnxInTorch(torch.nn.Module):
    """`forward(x)` computes the graph's first output from its first input."""

    def __init__(self, model: onnx.ModelProto, float_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        graph = model.graph
        self.float_dtype = float_dtype
        self.input_name = next(i.name for i in graph.input if i.name not in {t.name for t in graph.initializer})
        self.output_name = graph.output[0].name
        self.names: list[str] = []
        for i, tensor in enumerate(graph.initializer):
            array = numpy_helper.to_array(tensor)
            value = torch.from_numpy(np.array(array))
            if value.is_floating_point():
                value = value.to(float_dtype)
            self.register_buffer(f"init_{i}", value)
            self.names.append(tensor.name)
        self.nodes: list[tuple[str, list[str], list[str], Attrs]] = []
        for node in graph.node:
            if node.op_type == "Constant":
                value = torch.from_numpy(np.array(numpy_helper.to_array(node.attribute[0].t)))
                if value.is_floating_point():
                    value = value.to(float_dtype)
                self.register_buffer(f"init_{len(self.names)}", value)
                self.names.append(node.output[0])
                continue
            if node.op_type not in OPS and node.op_type != "Cast":
                raise UnsupportedOp(f"ONNX op {node.op_type} is not mapped to PyTorch here")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))

    def _cast(self, x: torch.Tensor, to: int) -> torch.Tensor:
        dtypes: dict[int, torch.dtype] = {
            onnx.TensorProto.FLOAT: self.float_dtype, onnx.TensorProto.FLOAT16: torch.float16,
            onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
            onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool}
        return x.to(dtypes[to])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {name: getattr(self, f"init_{i}") for i, name in enumerate(self.names)}
        env[self.input_name] = x
        for op, inputs, outputs, attrs in self.nodes:
            args = [env[i] if i else None for i in inputs]
            if op == "Cast":
                assert args[0] is not None
                result: Any = self._cast(args[0], attrs["to"])
            else:
                result = OPS[op](args, attrs)
            if isinstance(result, UnsupportedOp):
                raise result
            if isinstance(result, (tuple, list)):
                env.update(zip(outputs, result, strict=True))
            else:
                env[outputs[0]] = result
        out: torch.Tensor = env[self.output_name]
        return out


def traced(model: onnx.ModelProto, example: torch.Tensor, float_dtype: torch.dtype) -> torch.jit.ScriptModule:
    """TorchScript of the graph at `example`'s shape, on `example`'s device."""
    module = OnnxInTorch(model, float_dtype).to(example.device).eval()
    with torch.inference_mode(), warnings.catch_warnings():
        # the anchors' shape arithmetic becomes constants of this input shape: what a trace is for here
        warnings.simplefilter("ignore")
        script: torch.jit.ScriptModule = torch.jit.trace(  # type: ignore[no-untyped-call]
            module, example, check_trace=False)
    return torch.jit.freeze(script) if example.device.type == "cuda" else script
