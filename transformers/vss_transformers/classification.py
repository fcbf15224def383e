"""Image classification: centre crop + resize to UINT8, softmax when the model emits logits, top-k."""

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


def crop_region(hw: tuple[int, int], resize: int, crop: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) in source pixels of what "shorter side to `resize`, then the central
    `crop` x `crop` square" keeps: the same square, found before anything is resized."""
    h, w = hw
    r = resize / min(h, w)
    nh, nw = max(crop, round(h * r)), max(crop, round(w * r))  # the resized image's size, never allocated
    top, left = (nh - crop) // 2, (nw - crop) // 2
    scale_y, scale_x = nh / h, nw / w
    y0, x0 = min(h - 1, round(top / scale_y)), min(w - 1, round(left / scale_x))
    y1, x1 = max(y0 + 1, min(h, round((top + crop) / scale_y))), max(x0 + 1, min(w, round((left + crop) / scale_x)))
    return y0, x0, y1 - y0, x1 - x0


def resize_and_crop(image: Image, resize: int, crop: int) -> Image:
    """Shorter side to `resize`, then the central `crop` x `crop` square; computed as the crop of the source
    resized to `crop` x `crop`, so a 1x10000 strip allocates a crop, not the 256x2560000 resize (~2 GB)."""
    top, left, height, width = crop_region(image.shape[:2], resize, crop)
    region = image[top:top + height, left:left + width]
    interp = cv2.INTER_AREA if height > crop or width > crop else cv2.INTER_LINEAR
    out: Image = np.ascontiguousarray(cv2.resize(region, (crop, crop), interpolation=interp))
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
