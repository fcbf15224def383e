"""In-process predictors over the exported ONNX models: ONNX Runtime, the serving letterbox, our own decode
and NMS.

They are the reference the evaluators run in-process and the served path is compared against, so they use
only numpy, OpenCV and onnxruntime (no torch). The letterbox is the one the transformer serves with
(`vss_transformers.letterbox`): what is evaluated is preprocessed as what is served; decoding and NMS stay
our own, an independent check of the transformer's.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from vss_transformers.letterbox import letterbox, unletterbox

IMAGENET_MEAN: Final = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD: Final = np.array([0.229, 0.224, 0.225], np.float32)
# Offsets boxes of different classes apart so one NMS pass never suppresses across classes (as Ultralytics).
CLASS_OFFSET: Final = 7680.0


class Detections(NamedTuple):
    """Detections in original-frame pixels: boxes [K, 4] x1, y1, x2, y2, scores [K], class ids [K]."""

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    class_ids: NDArray[np.int64]


def non_max_suppression(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou: float) -> NDArray[np.int64]:
    """Indices of the boxes kept by greedy NMS, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        kept.append(best)
        width = np.clip(
            np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None
        )
        height = np.clip(
            np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None
        )
        overlap = width * height
        union = areas[best] + areas[rest] - overlap
        order = rest[overlap <= iou * np.maximum(union, 1e-9)]
    return np.asarray(kept, np.int64)


def decode_yolo_v8(output: NDArray[np.float32], confidence: float, iou: float, max_detections: int) -> Detections:
    """One frame of a YOLOv8 detect output [4 + nc, anchors] to class-aware NMS'd x1y1x2y2 boxes."""
    scores_all = output[4:]
    class_ids = scores_all.argmax(0)
    scores = scores_all[class_ids, np.arange(scores_all.shape[1])]
    keep = scores > confidence
    centre_size = output[:4, keep].T
    scores, class_ids = scores[keep], class_ids[keep]
    boxes = np.concatenate(
        [centre_size[:, :2] - centre_size[:, 2:] / 2, centre_size[:, :2] + centre_size[:, 2:] / 2], 1
    )
    kept = non_max_suppression(boxes + (class_ids * CLASS_OFFSET)[:, None].astype(np.float32), scores, iou)
    kept = kept[:max_detections]
    return Detections(boxes[kept].astype(np.float32), scores[kept].astype(np.float32), class_ids[kept].astype(np.int64))


def onnx_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def class_names(session: ort.InferenceSession) -> tuple[str, ...]:
    """The `names` metadata of an Ultralytics-style export, "{0: 'person', ...}", as a tuple by id."""
    names = ast.literal_eval(session.get_modelmeta().custom_metadata_map["names"])
    assert isinstance(names, dict)
    return tuple(str(names[i]) for i in range(len(names)))


@dataclass
class OnnxDetector:
    """`predict(image) -> Detections` for an RGB uint8 frame of any size, letterboxed to the export's imgsz.

    Defaults are Ultralytics' validation settings (confidence 0.001, IoU 0.7, 300 detections), which is
    what mAP is measured with; serve with a higher confidence.
    """

    session: ort.InferenceSession
    names: tuple[str, ...]
    input_size: tuple[int, int]  # height, width
    confidence: float = 0.001
    iou: float = 0.7
    max_detections: int = 300

    @classmethod
    def load(
        cls,
        path: Path,
        confidence: float = 0.001,
        iou: float = 0.7,
        max_detections: int = 300,
        threads: int | None = None,
    ) -> OnnxDetector:
        session = onnx_session(path, threads)
        size = ast.literal_eval(session.get_modelmeta().custom_metadata_map["imgsz"])
        return cls(session, class_names(session), (int(size[0]), int(size[1])), confidence, iou, max_detections)

    def __call__(self, image: NDArray[np.uint8]) -> Detections:
        canvas, placement = letterbox(image, self.input_size)
        tensor = canvas.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
        (output,) = self.session.run(["output0"], {"images": tensor})
        found = decode_yolo_v8(np.asarray(output, np.float32)[0], self.confidence, self.iou, self.max_detections)
        boxes = unletterbox(found.boxes, placement)
        return Detections(boxes, found.scores, found.class_ids)


def imagenet_normalise(image: NDArray[np.uint8]) -> NDArray[np.float32]:
    """HWC RGB uint8 to CHW float32 normalised with the ImageNet mean and std."""
    scaled = image.astype(np.float32) / np.float32(255)
    return ((scaled - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


@dataclass
class OnnxClassifier:
    """`predict(image) -> class ids ranked best first` for an RGB uint8 image resized to the imgsz."""

    session: ort.InferenceSession
    names: tuple[str, ...]
    input_size: tuple[int, int]  # height, width

    @classmethod
    def load(cls, path: Path, threads: int | None = None) -> OnnxClassifier:
        session = onnx_session(path, threads)
        size = ast.literal_eval(session.get_modelmeta().custom_metadata_map["imgsz"])
        return cls(session, class_names(session), (int(size[0]), int(size[1])))

    def probabilities(self, images: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Class probabilities [N, nc] of a batch of images already at the input size."""
        batch = np.stack([imagenet_normalise(image) for image in images])
        (output,) = self.session.run(["output0"], {"images": batch})
        return np.asarray(output, np.float32)

    def __call__(self, image: NDArray[np.uint8]) -> list[int]:
        if image.shape[:2] != self.input_size:
            image = np.asarray(cv2.resize(image, self.input_size[::-1], interpolation=cv2.INTER_AREA), np.uint8)
        probabilities = self.probabilities([image])[0]
        return [int(i) for i in np.argsort(-probabilities, kind="stable")]
