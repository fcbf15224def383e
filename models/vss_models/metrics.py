"""Detection and classification quality by the COCO and ImageNet definitions, in plain numpy.

Detection: per class, detections of all frames ranked by score and matched greedily to the unmatched ground
truth box they overlap most (IoU >= threshold); precision made monotone, sampled at 101 recall points and
averaged (AP); mAP is the mean over classes that have ground truth, at IoU 0.5 and over 0.50:0.05:0.95.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

COCO_IOU_THRESHOLDS: Final = np.linspace(0.5, 0.95, 10)
RECALL_POINTS: Final = np.linspace(0.0, 1.0, 101)
# COCO keeps at most this many detections per frame and class.
COCO_MAX_DETECTIONS: Final = 100


@dataclass(frozen=True)
class FrameDetections:
    boxes: NDArray[np.float32]  # [K, 4] x1, y1, x2, y2
    scores: NDArray[np.float32]  # [K]
    class_ids: NDArray[np.int64]  # [K]


@dataclass(frozen=True)
class FrameTruth:
    boxes: NDArray[np.float32]  # [N, 4] x1, y1, x2, y2
    class_ids: NDArray[np.int64]  # [N]


@dataclass(frozen=True)
class DetectionMetrics:
    map50: float
    map50_95: float
    # AP@0.5 and AP@0.5:0.95 per class id; NaN for a class with no ground truth (left out of the means).
    ap50: tuple[float, ...]
    ap50_95: tuple[float, ...]


def pairwise_iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4], as [N, M]."""
    a64, b64 = a.astype(np.float64).reshape(-1, 4), b.astype(np.float64).reshape(-1, 4)
    top_left = np.maximum(a64[:, None, :2], b64[None, :, :2])
    bottom_right = np.minimum(a64[:, None, 2:], b64[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = np.clip(a64[:, 2:] - a64[:, :2], 0, None).prod(-1)
    area_b = np.clip(b64[:, 2:] - b64[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_frame(ious: NDArray[np.float64], threshold: float) -> NDArray[np.bool_]:
    """Which detections (rows, already in descending score order) are true positives at `threshold`.

    Each detection takes the unmatched ground truth it overlaps most, if that overlap reaches `threshold`.
    """
    detections, truths = ious.shape
    taken = np.zeros(truths, np.bool_)
    hits = np.zeros(detections, np.bool_)
    if truths == 0:
        return hits
    for d in range(detections):
        candidates = np.where(taken, -1.0, ious[d])
        best = int(np.argmax(candidates))
        if candidates[best] >= threshold:
            taken[best] = True
            hits[d] = True
    return hits


def average_precision(scores: NDArray[np.float64], hits: NDArray[np.bool_], truths: int) -> float:
    """COCO AP from every detection's score and whether it was a hit, with 101-point interpolation."""
    if truths == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    true_positives = np.cumsum(hits[order])
    false_positives = np.cumsum(~hits[order])
    recall = true_positives / truths
    precision = true_positives / np.maximum(true_positives + false_positives, np.finfo(np.float64).eps)
    # The precision envelope: the best precision at this recall or any higher one.
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.zeros(len(RECALL_POINTS))
    valid = index < len(precision)
    sampled[valid] = precision[index[valid]]
    return float(sampled.mean())


def detection_map(
    detections: Sequence[FrameDetections],
    truths: Sequence[FrameTruth],
    num_classes: int,
    iou_thresholds: NDArray[np.float64] = COCO_IOU_THRESHOLDS,
    max_detections: int = COCO_MAX_DETECTIONS,
) -> DetectionMetrics:
    """mAP@0.5 and mAP@0.5:0.95 of per-frame detections against per-frame ground truth."""
    assert len(detections) == len(truths), "one FrameDetections per FrameTruth"
    per_class = np.full((num_classes, len(iou_thresholds)), np.nan)
    for class_id in range(num_classes):
        scores: list[NDArray[np.float64]] = []
        hits: list[NDArray[np.bool_]] = []
        truth_count = 0
        for found, truth in zip(detections, truths, strict=True):
            truth_boxes = truth.boxes.reshape(-1, 4)[truth.class_ids == class_id]
            mine = found.class_ids == class_id
            found_scores = found.scores[mine].astype(np.float64)
            order = np.argsort(-found_scores, kind="mergesort")[:max_detections]
            found_boxes, found_scores = found.boxes.reshape(-1, 4)[mine][order], found_scores[order]
            ious = pairwise_iou(found_boxes, truth_boxes)
            truth_count += len(truth_boxes)
            scores.append(found_scores)
            hits.append(np.stack([match_frame(ious, float(t)) for t in iou_thresholds], 1))
        all_scores = np.concatenate(scores)
        all_hits = np.concatenate(hits).reshape(-1, len(iou_thresholds))
        for t in range(len(iou_thresholds)):
            per_class[class_id, t] = average_precision(all_scores, all_hits[:, t], truth_count)
    has_truth = ~np.isnan(per_class[:, 0])
    ap50 = per_class[:, 0]
    ap50_95 = per_class.mean(1)
    return DetectionMetrics(
        map50=float(ap50[has_truth].mean()) if has_truth.any() else float("nan"),
        map50_95=float(ap50_95[has_truth].mean()) if has_truth.any() else float("nan"),
        ap50=tuple(float(v) for v in ap50),
        ap50_95=tuple(float(v) for v in ap50_95),
    )


def top_k_accuracy(ranked: Sequence[Sequence[int]], labels: Sequence[int], k: int) -> float:
    """Share of samples whose true label is among the first `k` of its ranked class ids."""
    assert len(ranked) == len(labels), "one ranking per label"
    if not labels:
        return float("nan")
    hits = sum(label in list(ranking)[:k] for ranking, label in zip(ranked, labels, strict=True))
    return hits / len(labels)
