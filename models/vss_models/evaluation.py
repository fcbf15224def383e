"""Held-out evaluation of any detector or classifier reachable through a predict callable.

The callable hides where the model runs: in-process ONNX Runtime (`vss_models.inference`), or the served
HTTP/gRPC path wrapped by whoever calls this. Held-out images come from a seed no training stream uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from vss_models.metrics import FrameDetections, FrameTruth, detection_map, top_k_accuracy
from vss_models.patterns import PATTERN_CLASSES, generate_pattern_image
from vss_models.scenes import DETECTION_CLASSES, generate_scene

# Training streams use small seeds (DetectorConfig.seed, ClassifierConfig.seed); this one is never trained on.
EVALUATION_SEED: Final = 20_260_000

# predict(rgb_uint8_frame) -> (boxes [K, 4] x1, y1, x2, y2 in frame pixels, scores [K], class ids [K])
DetectorPredict = Callable[[NDArray[np.uint8]], tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.integer]]]
# predict(rgb_uint8_224x224_image) -> class ids ranked best first (at least 5 for top-5)
ClassifierPredict = Callable[[NDArray[np.uint8]], Sequence[int]]


@dataclass(frozen=True)
class DetectorEvaluation:
    map50: float
    map50_95: float
    ap50: dict[str, float]
    ap50_95: dict[str, float]
    images: int
    instances: int
    seconds: float


@dataclass(frozen=True)
class ClassifierEvaluation:
    top1: float
    top5: float
    per_class_top1: dict[str, float]
    images: int
    seconds: float


def evaluate_detector(predict: DetectorPredict, n_images: int = 500, seed: int = EVALUATION_SEED) -> DetectorEvaluation:
    """COCO mAP of `predict` on `n_images` generated scenes at camera sizes (1280x720, 640x480, ...).

    Pass predictions at a low confidence (0.001, as Ultralytics validates) so AP sees the whole ranking.
    """
    started = time.perf_counter()
    found: list[FrameDetections] = []
    truths: list[FrameTruth] = []
    for index in range(n_images):
        scene = generate_scene(seed, index)
        boxes, scores, class_ids = predict(scene.image)
        found.append(
            FrameDetections(
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                scores=np.asarray(scores, np.float32).reshape(-1),
                class_ids=np.asarray(class_ids, np.int64).reshape(-1),
            )
        )
        truths.append(FrameTruth(boxes=scene.boxes, class_ids=scene.class_ids))
    metrics = detection_map(found, truths, len(DETECTION_CLASSES))
    return DetectorEvaluation(
        map50=metrics.map50,
        map50_95=metrics.map50_95,
        ap50=dict(zip(DETECTION_CLASSES, metrics.ap50, strict=True)),
        ap50_95=dict(zip(DETECTION_CLASSES, metrics.ap50_95, strict=True)),
        images=n_images,
        instances=sum(len(t.class_ids) for t in truths),
        seconds=time.perf_counter() - started,
    )


def evaluate_classifier(predict: ClassifierPredict, n: int = 1200, seed: int = EVALUATION_SEED) -> ClassifierEvaluation:
    """Top-1 and top-5 accuracy of `predict` on `n` generated pattern images (classes balanced)."""
    started = time.perf_counter()
    ranked: list[Sequence[int]] = []
    labels: list[int] = []
    for index in range(n):
        sample = generate_pattern_image(seed, index)
        ranked.append(list(predict(sample.image)))
        labels.append(sample.class_id)
    per_class = {
        name: top_k_accuracy(
            [r for r, label in zip(ranked, labels, strict=True) if label == class_id],
            [label for label in labels if label == class_id],
            1,
        )
        for class_id, name in enumerate(PATTERN_CLASSES)
    }
    return ClassifierEvaluation(
        top1=top_k_accuracy(ranked, labels, 1),
        top5=top_k_accuracy(ranked, labels, 5),
        per_class_top1=per_class,
        images=n,
        seconds=time.perf_counter() - started,
    )
