"""The exported graphs have the layouts and metadata that Ultralytics-format readers expect.

Checked on tiny untrained networks: the layout does not depend on the weights.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vss_models.classifier import (
    ClassifierNet,
    Probabilities,
    export_classifier_onnx,
    export_classifier_torchscript,
)
from vss_models.detector import STRIDES, DetectorNet, UltralyticsLayout, export_detector
from vss_models.inference import OnnxClassifier, OnnxDetector, onnx_session
from vss_models.patterns import PATTERN_CLASSES
from vss_models.scenes import DETECTION_CLASSES

TINY = (8, 8, 16, 16)


def dims(value_info: object) -> list[int | str]:
    shape = value_info.type.tensor_type.shape  # type: ignore[attr-defined]
    return [d.dim_param or d.dim_value for d in shape.dim]


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("detector") / "detector.onnx"
    export_detector(DetectorNet(len(DETECTION_CLASSES), TINY).eval(), DETECTION_CLASSES, path)
    return path


@pytest.fixture(scope="module")
def classifier_net() -> ClassifierNet:
    torch.manual_seed(0)
    return ClassifierNet(len(PATTERN_CLASSES), TINY).eval()


def test_the_detector_graph_has_the_yolov8_tensor_names_and_dynamic_axes(detector_path: Path) -> None:
    model = onnx.load(str(detector_path))
    (images,) = model.graph.input
    (output,) = model.graph.output
    assert images.name == "images" and dims(images) == ["batch", 3, "height", "width"]
    assert images.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert output.name == "output0" and dims(output) == ["batch", 4 + len(DETECTION_CLASSES), "anchors"]
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.opset_import[0].version == 17


def test_the_detector_metadata_reads_like_an_ultralytics_export(detector_path: Path) -> None:
    metadata = {p.key: p.value for p in onnx.load(str(detector_path)).metadata_props}
    assert metadata["names"] == "{0: 'person', 1: 'vehicle', 2: 'object'}"
    assert metadata["imgsz"] == "[640, 640]"
    assert metadata["stride"] == "32"
    assert metadata["task"] == "detect"
    assert metadata["batch"] == "1"
    assert {"description", "author", "version"} <= set(metadata)
    assert ast.literal_eval(metadata["names"]) == dict(enumerate(DETECTION_CLASSES))


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 640, 640), (2, 384, 640), (3, 320, 256)])
def test_the_detector_runs_at_any_batch_and_stride_multiple_size(
    detector_path: Path, batch: int, height: int, width: int
) -> None:
    session = onnx_session(detector_path, threads=1)
    images = np.random.default_rng(0).random((batch, 3, height, width), dtype=np.float32)
    (output,) = session.run(["output0"], {"images": images})
    anchors = sum((height // s) * (width // s) for s in STRIDES)
    assert output.shape == (batch, 4 + len(DETECTION_CLASSES), anchors)
    scores = output[:, 4:]
    assert ((scores >= 0) & (scores <= 1)).all()  # sigmoid scores, no objectness row
    assert (output[:, 2:4] >= 0).all()  # widths and heights


def test_onnx_runtime_agrees_with_torch_on_the_detector(detector_path: Path) -> None:
    torch.manual_seed(0)
    net = DetectorNet(len(DETECTION_CLASSES), TINY).eval()
    images = torch.rand(1, 3, 256, 320)
    with torch.no_grad():
        expected = UltralyticsLayout(net)(images).numpy()
    (actual,) = onnx_session(detector_path, threads=1).run(["output0"], {"images": images.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3)


def test_box_rows_are_centres_and_sizes_in_input_pixels(detector_path: Path) -> None:
    (output,) = onnx_session(detector_path, threads=1).run(
        ["output0"], {"images": np.zeros((1, 3, 64, 64), np.float32)}
    )
    centres = output[0, :2].T
    # The first anchors are the stride-8 cells, row-major: their centres sit at (4 + 8i, 4 + 8j) give or take
    # the predicted offsets, so they span the input.
    assert centres[:, 0].max() > 32 and centres[:, 1].max() > 32
    assert centres.min() > -64 and centres.max() < 128


def test_the_in_process_detector_returns_frame_pixel_boxes(detector_path: Path) -> None:
    predict = OnnxDetector.load(detector_path, threads=1)
    assert predict.names == DETECTION_CLASSES and predict.input_size == (640, 640)
    frame = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    boxes, scores, class_ids = predict(frame)
    assert boxes.shape == (len(scores), 4) and len(scores) <= 300
    assert (boxes[:, [0, 2]] <= 1280).all() and (boxes[:, [1, 3]] <= 720).all() and (boxes >= 0).all()
    assert set(class_ids.tolist()) <= {0, 1, 2}


def test_the_classifier_graph_takes_normalised_224_images_and_returns_probabilities(
    classifier_net: ClassifierNet, tmp_path: Path
) -> None:
    path = tmp_path / "classifier.onnx"
    export_classifier_onnx(classifier_net, PATTERN_CLASSES, path)
    model = onnx.load(str(path))
    assert model.graph.input[0].name == "images" and dims(model.graph.input[0]) == ["batch", 3, 224, 224]
    assert model.graph.output[0].name == "output0" and dims(model.graph.output[0]) == ["batch", len(PATTERN_CLASSES)]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert ast.literal_eval(metadata["names"]) == dict(enumerate(PATTERN_CLASSES))
    assert metadata["task"] == "classify" and metadata["imgsz"] == "[224, 224]"
    images = np.random.default_rng(0).standard_normal((5, 3, 224, 224)).astype(np.float32)
    (probabilities,) = onnx_session(path, threads=1).run(["output0"], {"images": images})
    assert probabilities.shape == (5, len(PATTERN_CLASSES))
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert OnnxClassifier.load(path).names == PATTERN_CLASSES


def test_the_torchscript_classifier_matches_onnx_and_carries_its_names(
    classifier_net: ClassifierNet, tmp_path: Path
) -> None:
    onnx_path, script_path = tmp_path / "classifier.onnx", tmp_path / "classifier.pt"
    export_classifier_onnx(classifier_net, PATTERN_CLASSES, onnx_path)
    export_classifier_torchscript(classifier_net, PATTERN_CLASSES, script_path)
    extra = {"names": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.15 marks torch.jit deprecated
        scripted = torch.jit.load(str(script_path), _extra_files=extra)
    assert json.loads(extra["names"]) == list(PATTERN_CLASSES)
    images = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        from_script = scripted(images).numpy()
        from_eager = Probabilities(classifier_net)(images).numpy()
    (from_onnx,) = onnx_session(onnx_path, threads=1).run(["output0"], {"images": images.numpy()})
    np.testing.assert_allclose(from_script, from_eager, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(from_onnx, from_eager, rtol=1e-3, atol=1e-4)
