"""Decoding YOLOv8 outputs and non-maximum suppression, in plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from vss_models.inference import decode_yolo_v8, imagenet_normalise, non_max_suppression


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert non_max_suppression(boxes, scores, 0.5).tolist() == [1, 2]


def test_nms_keeps_boxes_overlapping_at_or_below_the_threshold() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU 1/3
    scores = np.array([0.9, 0.8], np.float32)
    assert non_max_suppression(boxes, scores, 0.4).tolist() == [0, 1]
    assert non_max_suppression(boxes, scores, 0.3).tolist() == [0]


def yolo_output(rows: list[tuple[float, float, float, float, float, float]]) -> np.ndarray:
    """[4 + 2, anchors] from (cx, cy, w, h, score class 0, score class 1) rows."""
    return np.array(rows, np.float32).T


def test_decode_turns_centre_size_rows_into_corner_boxes_of_the_best_class() -> None:
    found = decode_yolo_v8(yolo_output([(20, 30, 10, 20, 0.1, 0.8), (5, 5, 2, 2, 0.01, 0.02)]), 0.25, 0.7, 300)
    assert found.boxes.tolist() == [[15, 20, 25, 40]]
    assert found.scores == pytest.approx([0.8])
    assert found.class_ids.tolist() == [1]


def test_decode_suppresses_within_a_class_but_not_across_classes() -> None:
    rows = [(20, 20, 10, 10, 0.9, 0.0), (21, 20, 10, 10, 0.8, 0.0), (20, 21, 10, 10, 0.0, 0.7)]
    found = decode_yolo_v8(yolo_output(rows), 0.25, 0.5, 300)
    assert found.class_ids.tolist() == [0, 1]
    assert found.scores == pytest.approx([0.9, 0.7])


def test_decode_keeps_at_most_max_detections_best_first() -> None:
    rows = [(20 * i, 0, 10, 10, 0.5 + i / 100, 0.0) for i in range(10)]
    found = decode_yolo_v8(yolo_output(rows), 0.25, 0.5, 3)
    assert found.scores == pytest.approx([0.59, 0.58, 0.57])


def test_decode_of_nothing_above_the_confidence_is_empty() -> None:
    found = decode_yolo_v8(yolo_output([(20, 20, 10, 10, 0.1, 0.1)]), 0.25, 0.5, 300)
    assert found.boxes.shape == (0, 4) and found.scores.shape == (0,) and found.class_ids.shape == (0,)


def test_imagenet_normalisation_maps_the_mean_colour_to_zero() -> None:
    mean_pixel = np.round(np.array([0.485, 0.456, 0.406]) * 255).astype(np.uint8)
    tensor = imagenet_normalise(np.broadcast_to(mean_pixel, (2, 2, 3)).copy())
    assert tensor.shape == (3, 2, 2) and tensor.dtype == np.float32
    assert np.abs(tensor).max() < 0.01
