"""Image classification: resize + centre crop to UINT8, softmax when the model emits logits, top-k."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from vss_transformers.class_names import label_of
from vss_transformers.codecs import Image

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TopK:
    class_ids: npt.NDArray[np.int32]
    scores: F32


def resize_and_crop(image: Image, resize: int, crop: int) -> Image:
    """Shorter side to `resize`, then the central `crop` x `crop` square."""
    h, w = image.shape[:2]
    r = resize / min(h, w)
    nh, nw = max(crop, round(h * r)), max(crop, round(w * r))
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    out: Image = np.ascontiguousarray(resized[top:top + crop, left:left + crop])
    return out


def preprocess(images: Sequence[Image], resize: int, crop: int) -> Image:
    batch = np.empty((len(images), crop, crop, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        batch[i] = resize_and_crop(image, resize, crop)
    return batch


def softmax(x: F32) -> F32:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: F32 = e / e.sum(axis=1, keepdims=True)
    return out


def to_probabilities(output: F32, mode: str) -> F32:
    """`auto` applies softmax unless every row already is a distribution."""
    out = output.astype(np.float32, copy=False)
    if mode == "never":
        return out
    if mode == "auto" and bool(np.all(out >= 0)) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out
    return softmax(out)


def top_k(probs: F32, k: int) -> list[TopK]:
    k = min(k, probs.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    results = []
    for row, idx in zip(probs, part, strict=True):
        order = idx[np.argsort(-row[idx], kind="stable")]
        results.append(TopK(order.astype(np.int32), row[order].astype(np.float32)))
    return results


def as_v2_tensors(results: Sequence[TopK], names: Sequence[str]) -> dict[str, npt.NDArray[np.generic]]:
    labels = np.array([[label_of(int(c), names).encode() for c in r.class_ids] for r in results],
                      dtype=object)
    return {"labels": labels, "scores": np.stack([r.scores for r in results]),
            "class_ids": np.stack([r.class_ids for r in results])}


def as_v1_result(result: TopK, names: Sequence[str], seconds: float) -> dict[str, object]:
    """The v1 result: `predictions[{class, confidence}]`, `top_prediction`, `confidence`."""
    preds = [{"class": label_of(int(c), names), "class_id": int(c), "confidence": round(float(s), 4)}
             for c, s in zip(result.class_ids, result.scores, strict=True)]
    return {"predictions": preds, "top_prediction": preds[0]["class"], "confidence": preds[0]["confidence"],
            "processing_time": round(seconds, 4)}
