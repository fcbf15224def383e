"""INT8 static quantization keeps the exported graphs' interface and answers, and leaves the output decoding
in float. Checked on tiny untrained networks calibrated on a few generated images; the shipped models'
INT8 quality is checked in tests/e2e/test_shipped_models.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vss_models.build import FULL
from vss_models.classifier import ClassifierNet, export_classifier_onnx
from vss_models.detector import DetectorNet, export_detector
from vss_models.evaluation import EVALUATION_SEED
from vss_models.inference import onnx_session
from vss_models.patterns import PATTERN_CLASSES, generate_pattern_image
from vss_models.quantize import (
    CALIBRATION_OFFSET,
    SETTINGS,
    classifier_calibration,
    classifier_feed,
    compare_speed,
    detector_calibration,
    detector_feed,
    float_nodes,
    quantize,
)
from vss_models.scenes import DETECTION_CLASSES, generate_scene

TINY = (8, 8, 16, 16)


@pytest.fixture(scope="module")
def detector_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("int8-detector")
    export_detector(DetectorNet(len(DETECTION_CLASSES), TINY).eval(), DETECTION_CLASSES, directory / "fp32.onnx")
    quantize(directory / "fp32.onnx", directory / "int8.onnx", detector_calibration(seed=1, n=4), SETTINGS["detector"])
    return directory / "fp32.onnx", directory / "int8.onnx"


def test_the_int8_detector_has_quantized_convolutions_and_the_same_inputs_outputs_and_metadata(
    detector_pair: tuple[Path, Path],
) -> None:
    fp32, int8 = (onnx.load(str(path)) for path in detector_pair)
    ops = [node.op_type for node in int8.graph.node]
    assert ops.count("QuantizeLinear") >= 20 and ops.count("DequantizeLinear") >= 20
    assert [i.name for i in int8.graph.input] == [i.name for i in fp32.graph.input] == ["images"]
    assert [o.name for o in int8.graph.output] == ["output0"]
    carried = {p.key: p.value for p in int8.metadata_props}
    assert {p.key: p.value for p in fp32.metadata_props}.items() <= carried.items()  # names, imgsz, stride...
    assert carried["onnx.quant.pre_process"] == "onnxruntime.quant"  # provenance ORT adds


def test_the_head_output_convolutions_and_box_decoding_stay_float(detector_pair: tuple[Path, Path]) -> None:
    fp32 = onnx.load(str(detector_pair[0]))
    kept = float_nodes(fp32)
    head_outputs = [name for name in kept if name.endswith("/Conv")]
    assert len(head_outputs) == 6  # box and class branch at three strides
    assert all(name.split("/")[-2].endswith(".1") for name in head_outputs)
    assert any(node.op_type == "Softplus" and node.name in kept for node in fp32.graph.node)
    int8 = onnx.load(str(detector_pair[1]))
    producers = {out: node.op_type for node in int8.graph.node for out in node.output}
    # the decoded rows are computed in float, never dequantized from one shared UINT8 scale
    assert producers["output0"] in ("Concat", "Transpose")
    softplus_inputs = [node.input[0] for node in int8.graph.node if node.op_type == "Softplus"]
    assert len(softplus_inputs) == 3 and all(producers[name] == "Conv" for name in softplus_inputs)


def test_int8_detector_outputs_stay_close_to_fp32_on_an_unseen_scene(detector_pair: tuple[Path, Path]) -> None:
    feed = detector_feed(generate_scene(EVALUATION_SEED, 3).image, 640, 384)  # not the calibration shape
    fp32, int8 = (np.asarray(onnx_session(path, 1).run(None, feed)[0]) for path in detector_pair)
    assert fp32.shape == int8.shape == (1, 4 + len(DETECTION_CLASSES), 48 * 80 + 24 * 40 + 12 * 20)
    scores_fp32, scores_int8 = fp32[0, 4:], int8[0, 4:]
    assert np.abs(scores_fp32 - scores_int8).max() < 0.05
    assert np.abs(fp32[0, :4] - int8[0, :4]).mean() < 2.0  # pixels


def test_int8_classifier_ranks_like_fp32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ClassifierNet(len(PATTERN_CLASSES), TINY).eval()
    export_classifier_onnx(net, PATTERN_CLASSES, tmp_path / "fp32.onnx")
    quantize(
        tmp_path / "fp32.onnx", tmp_path / "int8.onnx", classifier_calibration(seed=2, n=8), SETTINGS["classifier"]
    )
    sessions = [onnx_session(tmp_path / name, 1) for name in ("fp32.onnx", "int8.onnx")]
    agree = 0
    for index in range(8):
        feed = classifier_feed(generate_pattern_image(EVALUATION_SEED, index).image)
        fp32, int8 = (np.asarray(session.run(None, feed)[0])[0] for session in sessions)
        assert abs(float(int8.sum()) - 1.0) < 1e-3  # the softmax stays float
        np.testing.assert_allclose(int8, fp32, atol=0.05)
        agree += int(fp32.argmax() == int8.argmax())
    assert agree >= 6


def test_calibration_images_are_neither_training_nor_held_out_images() -> None:
    assert max(FULL.detector.train_scenes, FULL.classifier.train_images) < CALIBRATION_OFFSET
    assert EVALUATION_SEED not in (FULL.detector.seed, FULL.classifier.seed)
    first = next(detector_calibration(FULL.detector.seed, 1))["images"]
    assert first.shape == (1, 3, 640, 640) and first.dtype == np.float32 and 0 <= first.min() <= first.max() <= 1


def test_the_speed_comparison_times_both_models_on_the_same_input(detector_pair: tuple[Path, Path]) -> None:
    feed = detector_feed(generate_scene(0, 0).image, 320, 192)
    speed = compare_speed(*detector_pair, feed, threads=1, rounds=3)
    assert speed.input_shape == (1, 3, 192, 320) and speed.threads == 1
    assert speed.fp32_ms > 0 and speed.int8_ms > 0
    assert speed.row()["speedup"] == round(speed.fp32_ms / speed.int8_ms, 2)
