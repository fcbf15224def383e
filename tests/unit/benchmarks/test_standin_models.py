"""The stand-in models have the layouts the served path reads: an Ultralytics YOLOv8 export's output and
metadata with dynamic height and width, and a classifier's logits."""

from __future__ import annotations

import ast

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.frames import HEIGHT, WIDTH, camera_frame, jpeg_frames
from benchmarks.standin_models import resnet18_graph, yolov8n_graph


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": x})
    return np.asarray(out)


def test_yolov8n_standin_has_the_ultralytics_output_layout_at_any_stride_multiple_shape() -> None:
    model = yolov8n_graph(num_classes=80)
    onnx.checker.check_model(model)
    out = _run(model, np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32))
    anchors = 8 * 12 + 4 * 6 + 2 * 3  # strides 8, 16, 32
    assert out.shape == (2, 84, anchors)
    assert np.isfinite(out).all()
    cx, cy = out[0, 0], out[0, 1]
    assert cx[0] < cx[1] and cx.min() > 0 and cy.max() < 64 + 32  # centres in input pixels, row-major
    assert ((out[:, 4:] >= 0) & (out[:, 4:] <= 1)).all()  # sigmoid scores


def test_yolov8n_standin_carries_the_export_metadata_the_transformer_reads() -> None:
    meta = {p.key: p.value for p in yolov8n_graph(num_classes=3).metadata_props}
    assert ast.literal_eval(meta["names"]) == {0: "person", 1: "bicycle", 2: "car"}
    assert meta["stride"] == "32"


def test_yolov8n_standin_has_the_parameter_count_of_yolov8n() -> None:
    params = sum(int(np.prod(t.dims)) for t in yolov8n_graph().graph.initializer if len(t.dims) == 4)
    assert 3_000_000 < params < 3_200_000  # yolov8n: 3.15 M


def test_resnet18_standin_maps_a_normalised_batch_to_logits() -> None:
    out = _run(resnet18_graph(num_classes=10, size=64), np.zeros((2, 3, 64, 64), np.float32))
    assert out.shape == (2, 10)


def test_camera_frames_are_720p_and_deterministic() -> None:
    assert camera_frame(3).shape == (HEIGHT, WIDTH, 3)
    assert jpeg_frames(1, seed=3) == jpeg_frames(1, seed=3)
