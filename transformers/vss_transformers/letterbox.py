"""Letterboxing as Ultralytics does it, and its inverse for boxes: the one letterbox of the project, which
serving and `vss_models` (training, evaluation, INT8 calibration) share so their preprocessing cannot drift.

For models with dynamic height/width, a frame is scaled to fit `size` and padded only up to the next
multiple of the stride (a 1280x720 camera frame becomes 384x640, not 640x640: 40 % less compute)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from vss_transformers.codecs import Image

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed into the model input: `scale` then offset by (`pad_x`, `pad_y`)."""

    scale: float
    pad_x: int
    pad_y: int
    height: int  # of the source image, which the decoded one may be a reduced copy of
    width: int
    source_scale_x: float = 1.0  # source pixels per decoded pixel
    source_scale_y: float = 1.0


def letterbox_geometry(hw: tuple[int, int], shape: tuple[int, int], source_hw: tuple[int, int] | None = None
                       ) -> tuple[tuple[int, int], Letterbox]:
    """The (h, w) an `hw` image is resized to inside `shape` (h, w), and where it sits there: scaled by the
    smaller ratio, rounded, centred, the odd row or column of padding below or right (as Ultralytics).
    A side never rounds to nothing: a 1x2000 strip fitted into 640 is 1x640, not 0x640 (which cv2.resize
    refuses)."""
    h, w = hw
    if h < 1 or w < 1:
        raise ValueError(f"an image of {h}x{w} pixels has nothing to letterbox")
    src_h, src_w = source_hw or (h, w)
    th, tw = shape
    r = min(th / h, tw / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    top, left = round((th - nh) / 2 - 0.1), round((tw - nw) / 2 - 0.1)
    return (nh, nw), Letterbox(scale=r, pad_x=left, pad_y=top, height=src_h, width=src_w,
                               source_scale_x=src_w / w, source_scale_y=src_h / h)


def fitted_size(hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) of the image scaled so that its longer side is `size`."""
    return letterbox_geometry(hw, (size, size))[0]


def target_shape(shapes: list[tuple[int, int]], size: int, stride: int, rectangular: bool,
                 fixed: tuple[int, int] | None = None) -> tuple[int, int]:
    """Model input (h, w) for a batch: the fixed input of a static model, else the smallest
    stride-multiple rectangle (or the square) that holds every image of the batch scaled to `size`."""
    if fixed is not None:
        return fixed
    if not rectangular:
        return size, size
    fits = [fitted_size(s, size) for s in shapes]
    h = max(f[0] for f in fits)
    w = max(f[1] for f in fits)
    return int(np.ceil(h / stride) * stride), int(np.ceil(w / stride) * stride)


def letterbox(image: Image, shape: tuple[int, int], source_hw: tuple[int, int] | None = None
              ) -> tuple[Image, Letterbox]:
    """`image` scaled to fit `shape` (h, w) keeping its aspect ratio, centred, padded with grey;
    `source_hw` is the size of the source when `image` was decoded at a reduced scale."""
    h, w = image.shape[:2]
    (nh, nw), info = letterbox_geometry((h, w), shape, source_hw)
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.full((shape[0], shape[1], 3), PAD_VALUE, dtype=np.uint8)
    out[info.pad_y:info.pad_y + nh, info.pad_x:info.pad_x + nw] = resized
    return out, info


def unletterbox(boxes: npt.NDArray[np.float32], info: Letterbox) -> npt.NDArray[np.float32]:
    """x1, y1, x2, y2 boxes from model-input pixels back to original pixels, clipped to the image."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = ((out[:, [0, 2]] - info.pad_x) / info.scale * info.source_scale_x).clip(0, info.width)
    out[:, [1, 3]] = ((out[:, [1, 3]] - info.pad_y) / info.scale * info.source_scale_y).clip(0, info.height)
    return out
