"""The models the project ships (models/artifacts), served by `vss run` from the examples, give the same
answers as in-process inference with vss_models' reference code (the serving letterbox, which training and
evaluation share, then its own independent decode and NMS): same classes, boxes within 1 px. Also checks
the artifacts match their manifest and score the figures their cards quote."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.e2e.serving import REPO, Served, vss_run
from vss_models.evaluation import evaluate_classifier, evaluate_detector
from vss_models.inference import OnnxClassifier, OnnxDetector
from vss_models.patterns import generate_pattern_image
from vss_models.scenes import generate_scene

ARTIFACTS = REPO / "models" / "artifacts"
PARITY_SEED = 777  # neither a training nor the evaluation stream


def _example_as_square(tmp: Path, model_file: str = "detector.onnx") -> Path:
    """examples/detection.yaml with the square 640 letterbox the in-process reference uses."""
    text = (REPO / "examples" / "detection.yaml").read_text()
    assert "pvc://vss-models/detector.onnx" in text
    text = text.replace("pvc://vss-models/detector.onnx", f"pvc://vss-models/{model_file}")
    path = tmp / f"detection-square-{model_file}.yaml"
    path.write_text(text.replace("      maxDetections: 300", "      maxDetections: 300\n      rectangular: false"))
    return path


@pytest.fixture(scope="module")
def shipped_detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("shipped")
    with vss_run(_example_as_square(tmp), "detector", tmp) as served:
        yield served


@pytest.fixture(scope="module")
def shipped_classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("shipped-cls")
    with vss_run(REPO / "examples" / "classification.yaml", "classifier", tmp) as served:
        yield served


def test_every_shipped_artifact_matches_the_sha256_in_its_manifest() -> None:
    manifests = sorted(ARTIFACTS.glob("*manifest.json"))
    assert manifests, "models/artifacts has no manifest"
    checked = 0
    for manifest in manifests:
        entries = json.loads(manifest.read_text())
        files = entries.get("files") or entries.get("artifacts") or entries.get("sha256") or {}
        for name, meta in files.items():
            digest = meta["sha256"] if isinstance(meta, dict) else meta
            assert hashlib.sha256((ARTIFACTS / name).read_bytes()).hexdigest() == digest, name
            checked += 1
    assert checked >= 3


def _served_detections(served: Served, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    client = httpclient.InferenceServerClient(served.rest_url)
    tensor = httpclient.InferInput("pixels", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image)
    result = client.infer(served.name, [tensor])
    n = int(result.as_numpy("num_detections")[0])
    return (result.as_numpy("boxes")[0][:n], result.as_numpy("scores")[0][:n], result.as_numpy("class_ids")[0][:n])


def test_served_detections_match_in_process_inference_within_a_pixel(shipped_detector: Served) -> None:
    assert_served_matches_in_process(shipped_detector, ARTIFACTS / "detector.onnx")


def test_the_int8_detector_serves_the_same_boxes_as_its_in_process_inference(tmp_path: Path) -> None:
    """The QDQ graph behind the predictor's UINT8 prelude, served from the example with only the file swapped."""
    with vss_run(_example_as_square(tmp_path, "detector.int8.onnx"), "detector", tmp_path) as served:
        assert_served_matches_in_process(served, ARTIFACTS / "detector.int8.onnx")


def assert_served_matches_in_process(served: Served, model: Path) -> None:
    reference = OnnxDetector.load(model, confidence=0.5, iou=0.4)
    compared = 0
    for index in range(12):
        scene = generate_scene(PARITY_SEED, index)
        boxes, _, classes = _served_detections(served, scene.image)
        expected = reference(scene.image)
        # boxes whose score sits right at the threshold may fall either side of it from float noise
        firm = np.abs(expected.scores - 0.5) > 1e-3
        assert len(boxes) >= int(firm.sum())
        for box, cls in zip(expected.boxes[firm], expected.class_ids[firm], strict=True):
            distance = np.abs(boxes - box).max(axis=1)
            best = int(distance.argmin())
            assert distance[best] <= 1.0, (index, box, boxes)
            assert int(classes[best]) == int(cls)
            compared += 1
    assert compared >= 12, "the scenes should hold objects the shipped detector finds"


def test_served_top5_matches_in_process_inference(shipped_classifier: Served) -> None:
    reference = OnnxClassifier.load(ARTIFACTS / "classifier.onnx")
    client = httpclient.InferenceServerClient(shipped_classifier.rest_url)
    for index in range(20):
        sample = generate_pattern_image(PARITY_SEED, index)
        tensor = httpclient.InferInput("pixels", list(sample.image.shape), "UINT8")
        tensor.set_data_from_numpy(sample.image)
        result = client.infer(shipped_classifier.name, [tensor])
        served_ids = result.as_numpy("class_ids")[0].tolist()
        probabilities = reference.probabilities([sample.image])[0]
        expected = [int(i) for i in np.argsort(-probabilities, kind="stable")[:5]]
        assert served_ids[0] == expected[0], index
        np.testing.assert_allclose(result.as_numpy("scores")[0], probabilities[served_ids], atol=1e-4)


def test_the_torchscript_export_serves_the_same_answers_as_the_onnx_one(
        shipped_classifier: Served, tmp_path: Path) -> None:
    onnx_client = httpclient.InferenceServerClient(shipped_classifier.rest_url)
    with vss_run(REPO / "examples" / "classification-torchscript.yaml", "classifier-ts", tmp_path) as ts:
        ts_client = httpclient.InferenceServerClient(ts.rest_url)
        for index in range(6):
            image = generate_pattern_image(PARITY_SEED, index).image
            answers = []
            for client, name in ((onnx_client, shipped_classifier.name), (ts_client, ts.name)):
                tensor = httpclient.InferInput("pixels", list(image.shape), "UINT8")
                tensor.set_data_from_numpy(image)
                result = client.infer(name, [tensor])
                answers.append((result.as_numpy("class_ids")[0], result.as_numpy("scores")[0]))
            assert answers[0][0][0] == answers[1][0][0]
            np.testing.assert_allclose(answers[0][1], answers[1][1], atol=1e-3)


def _recorded(name: str) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads((ARTIFACTS / name).read_text())
    return figures


def test_the_shipped_detectors_score_the_map_their_card_reports_on_the_held_out_scenes() -> None:
    """In-process mAP of detector.onnx and detector.int8.onnx on the 500 held-out scenes, against the figures
    the cards quote from detector.evaluation.json and int8.evaluation.json."""
    fp32 = evaluate_detector(OnnxDetector.load(ARTIFACTS / "detector.onnx"), n_images=500)
    int8 = evaluate_detector(OnnxDetector.load(ARTIFACTS / "detector.int8.onnx"), n_images=500)
    card, card_int8 = _recorded("detector.evaluation.json")["in_process"], _recorded("int8.evaluation.json")
    assert fp32.map50 == pytest.approx(card["map50"], abs=0.003) and fp32.map50 >= 0.85
    assert fp32.map50_95 == pytest.approx(card["map50_95"], abs=0.003)
    assert int8.map50 == pytest.approx(card_int8["detector-int8"]["map50"]["int8"], abs=0.003)
    assert int8.map50_95 == pytest.approx(card_int8["detector-int8"]["map50_95"]["int8"], abs=0.003)
    assert fp32.map50 - int8.map50 < 0.01


def test_the_shipped_classifiers_score_the_accuracy_their_card_reports_on_the_held_out_images() -> None:
    fp32 = evaluate_classifier(OnnxClassifier.load(ARTIFACTS / "classifier.onnx"), n=1200)
    int8 = evaluate_classifier(OnnxClassifier.load(ARTIFACTS / "classifier.int8.onnx"), n=1200)
    card, card_int8 = _recorded("classifier.evaluation.json")["in_process"], _recorded("int8.evaluation.json")
    assert fp32.top1 == pytest.approx(card["top1"], abs=0.002) and fp32.top1 >= 0.95
    assert fp32.top5 == pytest.approx(card["top5"], abs=0.002)
    assert int8.top1 == pytest.approx(card_int8["classifier-int8"]["top1"]["int8"], abs=0.002)
    assert fp32.top1 - int8.top1 < 0.01
