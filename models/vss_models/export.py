"""Writing trained networks as ONNX (with Ultralytics-style metadata) and TorchScript."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn


def ultralytics_metadata(classes: tuple[str, ...], task: str, image_size: int, stride: int) -> dict[str, str]:
    """The metadata_props Ultralytics writes into its ONNX exports, which YOLO readers parse."""
    return {
        "description": f"VSS Serving {task} model trained on generated images (vss_models)",
        "author": "VSS Serving",
        "version": "1.0.0",
        "license": "Apache-2.0",
        "stride": str(stride),
        "task": task,
        "batch": "1",
        "imgsz": str([image_size, image_size]),
        "names": str(dict(enumerate(classes))),
    }


def onnx_bytes(model: nn.Module, example: Tensor, dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    """Trace `model` in eval mode to ONNX opset 17, input `images`, output `output0`."""
    model.eval()
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        path = Path(scratch) / "model.onnx"
        # The TorchScript-based exporter is deprecated in favour of torch.export; it still writes plain
        # dynamic axes without onnxscript, folds batch norm, and its output is verified with onnxruntime.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes=dynamic_axes,
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
        return path.read_bytes()


def with_metadata(model: bytes, metadata: dict[str, str], output_dims: list[int | str]) -> bytes:
    """The ONNX model with exactly `metadata` as its metadata_props and `output0` declared with
    `output_dims` (names for dynamic axes), checked. The tracer loses static sizes such as the 4 + nc rows
    of a detect output, which readers take from the declared shape."""
    proto = onnx.load_from_string(model)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    (output,) = proto.graph.output
    shape = output.type.tensor_type.shape
    assert len(shape.dim) == len(output_dims), f"output0 has {len(shape.dim)} axes, not {len(output_dims)}"
    for dim, size in zip(shape.dim, output_dims, strict=True):
        dim.Clear()
        if isinstance(size, int):
            dim.dim_value = size
        else:
            dim.dim_param = size
    onnx.checker.check_model(proto, full_check=True)
    return bytes(proto.SerializeToString())


def write_torchscript(model: nn.Module, example: Tensor, classes: tuple[str, ...], path: Path) -> None:
    """Trace `model` to TorchScript; the class names ride along as the extra file `names`, a JSON list
    indexed by class id."""
    model.eval()
    with warnings.catch_warnings():
        # torch 2.15 marks torch.jit deprecated, but TorchScript is the format our TorchScript runtime (and
        # KServe's) loads without the Python model code, so we keep writing it.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, (example,))  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path), _extra_files={"names": json.dumps(list(classes))})
