"""COCO mAP and top-k accuracy on cases small enough to work out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vss_models.metrics import (
    FrameDetections,
    FrameTruth,
    average_precision,
    detection_map,
    match_frame,
    pairwise_iou,
    top_k_accuracy,
)


def truth(boxes: list[list[float]], classes: list[int]) -> FrameTruth:
    return FrameTruth(np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64))


def found(boxes: list[list[float]], scores: list[float], classes: list[int]) -> FrameDetections:
    return FrameDetections(
        np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(classes, np.int64)
    )


def test_iou_of_a_box_with_its_top_sixty_percent_is_point_six() -> None:
    iou = pairwise_iou(np.array([[0, 0, 10, 10]], np.float32), np.array([[0, 0, 10, 6], [20, 20, 30, 30]], np.float32))
    assert iou == pytest.approx(np.array([[0.6, 0.0]]))


def test_perfect_detections_score_one_at_every_threshold() -> None:
    frames = [truth([[0, 0, 10, 10], [20, 20, 40, 30]], [0, 1])]
    metrics = detection_map([found([[0, 0, 10, 10], [20, 20, 40, 30]], [0.9, 0.8], [0, 1])], frames, 2)
    assert metrics.map50 == 1.0
    assert metrics.map50_95 == 1.0


def test_a_false_positive_ranked_above_the_only_hit_halves_ap() -> None:
    # Ranked: miss (P=0/1), hit (P=1/2, R=1). The envelope is 0.5 at every recall point.
    frames = [truth([[0, 0, 10, 10]], [0])]
    metrics = detection_map([found([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])], frames, 1)
    assert metrics.map50 == pytest.approx(0.5)


def test_hit_miss_hit_gives_the_101_point_interpolated_value() -> None:
    # Two truths. Ranked hit, miss, hit: recall 0.5, 0.5, 1.0; precision 1, 1/2, 2/3.
    # Envelope: 1 for recall points 0.00..0.50 (51 points), 2/3 for 0.51..1.00 (50 points).
    frames = [truth([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0])]
    detections = [found([[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10]], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert detection_map(detections, frames, 1).map50 == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_a_duplicate_detection_is_a_false_positive_but_costs_no_ap_below_the_hit() -> None:
    frames = [truth([[0, 0, 10, 10]], [0])]
    detections = [found([[0, 0, 10, 10], [0, 0, 10, 9]], [0.9, 0.8], [0, 0])]
    hits = match_frame(pairwise_iou(detections[0].boxes, frames[0].boxes), 0.5)
    assert hits.tolist() == [True, False]
    assert detection_map(detections, frames, 1).map50 == 1.0


def test_an_overlap_of_062_counts_at_three_of_the_ten_coco_thresholds() -> None:
    # IoU 0.62 clears 0.50, 0.55 and 0.60 and fails 0.65 .. 0.95.
    frames = [truth([[0, 0, 10, 10]], [0])]
    metrics = detection_map([found([[0, 0, 10, 6.2]], [0.9], [0])], frames, 1)
    assert metrics.map50 == 1.0
    assert metrics.map50_95 == pytest.approx(0.3)


def test_each_detection_takes_the_unmatched_truth_it_overlaps_most() -> None:
    # Truth 1 overlaps the first detection most; the second detection then takes truth 0.
    ious = np.array([[0.55, 0.9], [0.7, 0.8]])
    assert match_frame(ious, 0.5).tolist() == [True, True]
    # At 0.75 the second detection's best remaining truth (0.7) is not enough.
    assert match_frame(ious, 0.75).tolist() == [True, False]


def test_detections_of_the_wrong_class_match_nothing() -> None:
    frames = [truth([[0, 0, 10, 10]], [0])]
    metrics = detection_map([found([[0, 0, 10, 10]], [0.9], [1])], frames, 2)
    assert metrics.ap50[0] == 0.0
    assert math.isnan(metrics.ap50[1])  # no truth of class 1: left out of the mean
    assert metrics.map50 == 0.0


def test_classes_without_truth_are_left_out_of_the_mean() -> None:
    frames = [truth([[0, 0, 10, 10]], [0])]
    metrics = detection_map([found([[0, 0, 10, 10]], [0.9], [0])], frames, 3)
    assert metrics.map50 == 1.0
    assert math.isnan(metrics.ap50[2])


def test_detections_are_ranked_across_frames_by_score() -> None:
    # Frame A: a confident miss. Frame B: a less confident hit. Ranked miss then hit: AP 0.5.
    frames = [truth([], []), truth([[0, 0, 10, 10]], [0])]
    detections = [found([[0, 0, 10, 10]], [0.9], [0]), found([[0, 0, 10, 10]], [0.5], [0])]
    assert detection_map(detections, frames, 1).map50 == pytest.approx(0.5)


def test_missed_truth_caps_recall_and_ap() -> None:
    # One of two truths found, with no false positives: precision 1 up to recall 0.5, 0 beyond.
    frames = [truth([[0, 0, 10, 10]], [0]), truth([[0, 0, 10, 10]], [0])]
    detections = [found([[0, 0, 10, 10]], [0.9], [0]), found([], [], [])]
    assert detection_map(detections, frames, 1).map50 == pytest.approx(51 / 101)


def test_only_the_hundred_best_detections_per_frame_and_class_count() -> None:
    boxes = [[100 + i, 100, 101 + i, 101] for i in range(100)] + [[0, 0, 10, 10]]
    scores = [0.9] * 100 + [0.1]
    frames = [truth([[0, 0, 10, 10]], [0])]
    assert detection_map([found(boxes, scores, [0] * 101)], frames, 1).map50 == 0.0


def test_average_precision_without_truth_is_undefined() -> None:
    assert math.isnan(average_precision(np.array([0.5]), np.array([False]), 0))


def test_top_k_accuracy_counts_labels_within_the_first_k() -> None:
    ranked = [[2, 0, 1], [0, 1, 2], [1, 2, 0]]
    labels = [2, 1, 0]
    assert top_k_accuracy(ranked, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(ranked, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(ranked, labels, 3) == 1.0
