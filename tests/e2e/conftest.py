from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.e2e.serving import REPO, Served, vss_run
from tests.fixtures.onnx_graphs import colour_cell_detector, mean_colour_classifier, save

DETECTION_YAML = """\
apiVersion: serving.vss.ai/v1alpha1
kind: VSSModel
metadata: {{name: {name}}}
spec:
  task: detection
  version: v1
  versions: [{{name: v1, storageUri: {path}}}]
  predictor: {{batching: {{maxBatchSize: 8, maxLatencyMs: 2}}}}
  transformer:
    maxRequestBytes: 4000000
    detection: {{confidenceThreshold: 0.5, iouThreshold: 0.4}}
"""

CLASSIFICATION_YAML = """\
apiVersion: serving.vss.ai/v1alpha1
kind: VSSModel
metadata: {{name: {name}}}
spec:
  task: classification
  version: v1
  versions: [{{name: v1, storageUri: {path}}}]
  transformer:
    classification: {{topK: 3}}
"""


def write_model_yaml(tmp: Path, name: str, template: str, model_file: Path, processes: str | None = None) -> Path:
    """The VSSModel of `template`; with `processes` (single | two), its `predictor.processes` set so (a CPU model
    is served by one process by default, as the operator renders it)."""
    text = template.format(name=name, path=model_file)
    if processes is not None:
        doc = yaml.safe_load(text)
        doc["spec"].setdefault("predictor", {})["processes"] = processes
        text = yaml.safe_dump(doc, sort_keys=False)
    path = tmp / f"{name}.yaml" if processes is None else tmp / f"{name}-{processes}.yaml"
    path.write_text(text)
    return path


def scene() -> np.ndarray:
    """A 1280x720 RGB frame: a red block (person) and a blue block (object) on black."""
    image = np.zeros((720, 1280, 3), np.uint8)
    image[100:300, 200:400, 0] = 255
    image[480:620, 880:1040, 2] = 255
    return image


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image[:, :, ::-1])
    assert ok
    return data.tobytes()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def detector(workdir: Path) -> Iterator[Served]:
    model = save(colour_cell_detector("yolov8"), workdir / "cells-v8.onnx")
    with vss_run(write_model_yaml(workdir, "cells", DETECTION_YAML, model), "cells", workdir) as served:
        yield served


@pytest.fixture(scope="session")
def classifier(workdir: Path) -> Iterator[Served]:
    model = save(mean_colour_classifier(), workdir / "colour.onnx")
    with vss_run(write_model_yaml(workdir, "colours", CLASSIFICATION_YAML, model), "colours", workdir) as served:
        yield served


@pytest.fixture(scope="session")
def detector_two(workdir: Path) -> Iterator[Served]:
    """The `detector` fixture's model and spec served as two processes (transformer -> gRPC -> predictor), the
    layout GPU models keep: what the single-process path is compared with."""
    model = save(colour_cell_detector("yolov8"), workdir / "cells-v8-two.onnx")
    with vss_run(write_model_yaml(workdir, "cells", DETECTION_YAML, model, "two"), "cells", workdir) as served:
        yield served


@pytest.fixture(scope="session")
def classifier_two(workdir: Path) -> Iterator[Served]:
    model = save(mean_colour_classifier(), workdir / "colour-two.onnx")
    with vss_run(write_model_yaml(workdir, "colours", CLASSIFICATION_YAML, model, "two"), "colours",
                 workdir) as served:
        yield served


@pytest.fixture(scope="session")
def shipped_detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The shipped detector as `vss run examples/detection.yaml` serves it, shared by the stream tests (each only
    calls it; none stops it)."""
    with vss_run(REPO / "examples" / "detection.yaml", "stream-detector", tmp_path_factory.mktemp("shipped")) as s:
        yield s


@pytest.fixture(scope="session")
def anomaly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The shipped anomaly detector as `vss run examples/anomaly.yaml` serves it (series FP32 [N, 100, 5])."""
    with vss_run(REPO / "examples" / "anomaly.yaml", "sensor-anomaly", tmp_path_factory.mktemp("anomaly")) as s:
        yield s


@pytest.fixture(scope="session")
def forecaster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The shipped forecaster as `vss run examples/forecasting.yaml` serves it (series FP32 [N, 24, 5])."""
    with vss_run(REPO / "examples" / "forecasting.yaml", "sensor-forecast", tmp_path_factory.mktemp("fc")) as s:
        yield s


# The window each shipped series model takes: (readings, features).
SERIES_WINDOWS = {"sensor-anomaly": (100, 5), "sensor-forecast": (24, 5)}


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stream tests' generated crossing clip (1280x720, 15 fps, 300 frames) with its ground truth."""
    from vss_models.clips import crossing_clip, write_clip

    return write_clip(crossing_clip(), tmp_path_factory.mktemp("clips") / "crossing.mp4")
