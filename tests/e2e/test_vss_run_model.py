"""`vss run --model PATH` on exports laid out as Ultralytics writes them (made offline, tests/fixtures/
ultralytics_exports.py): the VSSModel it prints is valid and read from the export's metadata and output shape,
the model it serves answers v2 (tritonclient) with the export's own class names, and an export it cannot serve
is refused with exit code 2 and a message naming the shape, without a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from tests.e2e.conftest import jpeg, scene
from tests.e2e.serving import REPO, Served, vss_run
from tests.fixtures import ultralytics_exports as exports
from vss_api.vssmodel import ModelFormat, Task, VSSModel, YoloLayout

PERSON = (200, 100, 400, 300)  # the red block of scene(), x1, y1, x2, y2
OBJECT = (880, 480, 1040, 620)  # the blue block


def printed_vssmodel(served: Served) -> VSSModel:
    """The VSSModel `vss run --model` printed before it started serving."""
    printed, separator, _ = served.output().partition("\n---\n")
    assert separator, f"no VSSModel document before the serving report:\n{served.output()[:2000]}"
    return VSSModel.model_validate(yaml.safe_load(printed))


def _serve(export: Path, name: str) -> Iterator[Served]:
    with vss_run(export, name, export.parent, args=("--model", str(export))) as served:
        yield served


@pytest.fixture(scope="module")
def detect_onnx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(exports.detect_onnx(tmp_path_factory.mktemp("byo") / "yolov8n-cells.onnx"), "yolov8n-cells")


@pytest.fixture(scope="module")
def classify_onnx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(exports.classify_onnx(tmp_path_factory.mktemp("byo") / "yolov8n-cls.onnx"), "yolov8n-cls")


@pytest.fixture(scope="module")
def detect_torchscript(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(exports.detect_torchscript(tmp_path_factory.mktemp("byo") / "cells.pt"), "cells")


def _detect(served: Served, image: np.ndarray) -> list[tuple[str, list[float]]]:
    client = httpclient.InferenceServerClient(served.rest_url)
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([jpeg(image)], dtype=object))
    result = client.infer(served.name, [tensor])
    n = int(result.as_numpy("num_detections")[0])
    return [(label.decode(), box) for label, box in
            zip(result.as_numpy("labels")[0][:n], result.as_numpy("boxes")[0][:n].tolist(), strict=True)]


def _inside(box: list[float], region: tuple[int, int, int, int], slack: float = 64) -> bool:
    return (box[0] >= region[0] - slack and box[1] >= region[1] - slack
            and box[2] <= region[2] + slack and box[3] <= region[3] + slack)


def _check_cells(found: list[tuple[str, list[float]]]) -> None:
    assert {label for label, _ in found} == {"person", "object"}, found
    for label, box in found:
        assert _inside(box, PERSON if label == "person" else OBJECT), (label, box)


def test_the_printed_vssmodel_of_a_detect_onnx_export_carries_its_task_names_size_and_layout(
        detect_onnx: Served) -> None:
    model = printed_vssmodel(detect_onnx)
    spec = model.spec
    assert model.metadata.name == "yolov8n-cells"
    assert spec.task is Task.DETECTION
    assert spec.served_version().format is ModelFormat.ONNX
    assert spec.detection.classes == list(exports.DETECT_NAMES)
    assert spec.detection.input_size == 640 and spec.detection.layout is YoloLayout.YOLOV8
    assert spec.predictor.batching.max_batch_size == 1, "the export's batch is fixed at 1"


def test_a_served_detect_onnx_export_answers_with_its_own_class_names_in_image_pixels(detect_onnx: Served) -> None:
    _check_cells(_detect(detect_onnx, scene()))


def test_a_served_classify_onnx_export_names_the_dominant_colour_with_its_own_names(classify_onnx: Served) -> None:
    model = printed_vssmodel(classify_onnx)
    params = model.spec.classification
    assert model.spec.task is Task.CLASSIFICATION
    assert params.classes == list(exports.CLASSIFY_NAMES) and params.input_size == 224
    assert params.mean == [0.0, 0.0, 0.0] and params.std == [1.0, 1.0, 1.0], "Ultralytics classifiers read pixels/255"
    client = httpclient.InferenceServerClient(classify_onnx.rest_url)
    tops = []
    for rgb in ((240, 20, 20), (20, 20, 240), (8, 8, 8)):
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([jpeg(np.full((240, 320, 3), rgb, np.uint8))], dtype=object))
        tops.append(client.infer(classify_onnx.name, [tensor]).as_numpy("labels")[0][0].decode())
    assert tops == ["red", "blue", "dark"]


def test_a_torchscript_export_with_ultralytics_config_txt_is_served_with_its_names(detect_torchscript: Served) -> None:
    model = printed_vssmodel(detect_torchscript)
    assert model.spec.served_version().format is ModelFormat.TORCHSCRIPT
    assert model.spec.detection.classes == list(exports.DETECT_NAMES)
    assert model.spec.detection.rectangular is False, "TorchScript is traced at one size: letterboxed to a square"
    _check_cells(_detect(detect_torchscript, scene()))


@pytest.mark.parametrize(("make", "expected"), [
    (exports.segment_onnx, "segmentation export (task 'segment', outputs [1, 39, 400], [1, 32, 160, 160])"),
    (exports.rank3_onnx, "has shape [1, 3, 64] (rank 3)"),
])
def test_an_export_vss_cannot_serve_is_refused_with_exit_code_2_and_the_shape_at_fault(
        make: object, expected: str, tmp_path: Path) -> None:
    assert callable(make)
    export = make(tmp_path / "refused.onnx")
    done = subprocess.run([sys.executable, "-m", "vss_cli.main", "run", "--model", str(export)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2, done
    assert expected in done.stderr and done.stderr.startswith("vss: refused.onnx"), done.stderr
    assert "Traceback" not in done.stderr and not done.stdout
