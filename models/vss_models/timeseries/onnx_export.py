"""torch modules to ONNX with a dynamic batch axis, through the TorchScript exporter (the dynamo one needs
onnxscript, which the build does not otherwise need), checked against torch before anything is written."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from vss_models.timeseries.sensors import F32

OPSET = 18


def export(module: nn.Module, example: F32, input_name: str, output_names: Sequence[str],
           output_batch_axes: Mapping[str, int] | None = None) -> onnx.ModelProto:
    """`module` (in eval mode) as ONNX, batch axis 0 dynamic on its input and outputs."""
    axes = {input_name: {0: "batch"}, **{n: {(output_batch_axes or {}).get(n, 0): "batch"}
                                          for n in output_names}}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # The TorchScript exporter is deprecated but kept; an LSTM without initial states exports fine.
        warnings.simplefilter("ignore")
        path = Path(folder) / "model.onnx"
        torch.onnx.export(module.eval(), (torch.from_numpy(example),), path, dynamo=False,
                          input_names=[input_name], output_names=list(output_names), dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True)
        model = onnx.load_model(str(path))
    onnx.checker.check_model(model)
    return model


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, object]) -> None:
    """String metadata the predictor publishes in `/config` (`parameters.metadata`): strings as they
    are, everything else as JSON."""
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v)
                                        for k, v in metadata.items()})


def session(model: onnx.ModelProto, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                providers=["CPUExecutionProvider"])


def run(model_session: ort.InferenceSession, feeds: Mapping[str, F32],
        batch: int = 256) -> dict[str, np.ndarray]:
    """Outputs of `model_session` for a large input, `batch` rows at a time."""
    (name, array), = feeds.items()
    parts: dict[str, list[np.ndarray]] = {}
    outputs = [o.name for o in model_session.get_outputs()]
    for start in range(0, len(array), batch):
        result = model_session.run(outputs, {name: array[start:start + batch]})
        for key, value in zip(outputs, result, strict=True):
            parts.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}
