"""The pure parts of `vss predict` (vss_cli.predict): which task a model's v2 metadata describes, how windows are
slid over a series, how a CSV is read, and that drawing leaves the input untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vss_cli.predict import PredictError, draw_detections, flagged_spans, read_series, task_of, window_starts


def test_the_task_is_read_from_the_outputs_a_model_lists() -> None:
    def listed(*names: str) -> dict[str, object]:
        return {"name": "m", "outputs": [{"name": n} for n in names]}

    assert task_of(listed("boxes", "scores", "class_ids", "labels", "num_detections")) == "detection"
    assert task_of(listed("labels", "scores", "class_ids")) == "classification"
    assert task_of(listed("is_anomaly", "anomaly_score")) == "anomaly"
    assert task_of(listed("predictions", "lower", "upper", "forecast_horizon")) == "forecasting"
    with pytest.raises(PredictError, match="none of the tasks"):
        task_of(listed("output0"))


def test_windows_cover_the_series_evenly_and_end_at_its_last_reading() -> None:
    assert window_starts(400, 100) == list(range(0, 301, 2))
    assert window_starts(100, 100) == [0]
    assert window_starts(99, 100) == []
    starts = window_starts(100_000, 100)
    assert len(starts) <= 256 and starts[-1] == 100_000 - 100 and starts[0] == 0


def test_overlapping_anomalous_windows_merge_into_one_span() -> None:
    assert flagged_spans([0, 10, 20, 200], 50, [True, True, False, True]) == [(0, 59), (200, 249)]


def test_a_csv_header_names_the_features_and_a_headless_csv_is_all_readings(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("b,a\n1,2\n3,4\n")
    values, names = read_series(tmp_path / "h.csv")
    assert names == ["b", "a"] and values.tolist() == [[1, 2], [3, 4]]
    (tmp_path / "n.csv").write_text("1,2\n3,4\n")
    assert read_series(tmp_path / "n.csv")[1] is None
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    with pytest.raises(PredictError, match="must be numbers"):
        read_series(tmp_path / "bad.csv")


def test_drawing_boxes_returns_a_copy_with_the_box_edges_coloured() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    drawn = draw_detections(image, np.array([[50, 60, 150, 160]], np.float32), ["person"], np.array([0.9], np.float32),
                            [0])
    assert not image.any(), "the input stays as it was"
    assert drawn[100, 50].any() and not drawn[100, 100].any() and drawn.shape == image.shape
