"""The evaluators score whatever predict callable they are given, on held-out generated data."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from vss_models.evaluation import evaluate_classifier, evaluate_detector
from vss_models.patterns import PATTERN_CLASSES, generate_pattern_image
from vss_models.scenes import generate_scene

SEED = 99


def scene_oracle(n: int) -> dict[bytes, tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]]:
    answers = {}
    for index in range(n):
        scene = generate_scene(SEED, index)
        answers[scene.image.tobytes()] = (scene.boxes, np.ones(len(scene.boxes), np.float32), scene.class_ids)
    return answers


def test_a_detector_that_returns_the_truth_scores_a_perfect_map() -> None:
    answers = scene_oracle(4)
    result = evaluate_detector(lambda image: answers[image.tobytes()], n_images=4, seed=SEED)
    assert result.map50 == 1.0 and result.map50_95 == 1.0
    assert result.images == 4 and result.instances > 0
    assert set(result.ap50) == {"person", "vehicle", "object"}


def test_a_detector_that_finds_nothing_scores_zero() -> None:
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert evaluate_detector(lambda image: empty, n_images=3, seed=SEED).map50 == 0.0


def test_boxes_shifted_a_fifth_of_their_width_count_only_at_loose_thresholds() -> None:
    answers = scene_oracle(3)

    def shifted(image: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
        boxes, scores, classes = answers[image.tobytes()]
        width = boxes[:, 2:3] - boxes[:, 0:1]
        # IoU (1 - 0.2) / (1 + 0.2) = 2/3: a hit at 0.50 .. 0.65, a miss at 0.70 .. 0.95.
        return boxes + np.concatenate([width, width * 0, width, width * 0], 1) * 0.2, scores, classes

    result = evaluate_detector(shifted, n_images=3, seed=SEED)
    assert result.map50 == 1.0
    assert result.map50_95 == pytest.approx(0.4)


def test_a_classifier_that_knows_the_labels_scores_full_top1() -> None:
    labels = {generate_pattern_image(SEED, i).image.tobytes(): i % len(PATTERN_CLASSES) for i in range(24)}

    def oracle(image: NDArray[np.uint8]) -> list[int]:
        label = labels[image.tobytes()]
        return [label] + [c for c in range(len(PATTERN_CLASSES)) if c != label]

    result = evaluate_classifier(oracle, n=24, seed=SEED)
    assert result.top1 == 1.0 and result.top5 == 1.0 and result.images == 24
    assert set(result.per_class_top1) == set(PATTERN_CLASSES)


def test_a_classifier_that_always_says_the_same_scores_chance() -> None:
    result = evaluate_classifier(lambda image: [0, 1, 2, 3, 4], n=24, seed=SEED)
    assert result.top1 == pytest.approx(1 / len(PATTERN_CLASSES))
    assert result.top5 == pytest.approx(5 / len(PATTERN_CLASSES))
