"""`vss models evaluate` prints held-out metrics of a model directory as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vss_models.classifier import ClassifierNet, export_classifier_onnx
from vss_models.cli import main
from vss_models.detector import DetectorNet, export_detector
from vss_models.patterns import PATTERN_CLASSES
from vss_models.scenes import DETECTION_CLASSES


def test_evaluate_prints_detector_and_classifier_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    export_detector(DetectorNet(3, (8, 8, 16, 16)).eval(), DETECTION_CLASSES, tmp_path / "detector.onnx")
    export_classifier_onnx(ClassifierNet(12, (8, 8, 16, 16)).eval(), PATTERN_CLASSES, tmp_path / "classifier.onnx")
    argv = ["evaluate", "--dir", str(tmp_path), "--only", "detector", "--only", "classifier"]
    assert main([*argv, "--images", "2", "--classifier-images", "12"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["detector"]["images"] == 2 and 0.0 <= result["detector"]["map50"] <= 1.0
    assert result["classifier"]["images"] == 12 and 0.0 <= result["classifier"]["top1"] <= 1.0
    assert "timeseries" not in result


def test_an_unknown_subcommand_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["train"])
