"""Letterboxing (aspect-preserving resize onto a padded canvas) and its inverse for boxes.

The same arithmetic as Ultralytics' `LetterBox(auto=False)`: scale by the smaller ratio, round the resized
size, centre the image with gray (114) padding split as evenly as rounding allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

PAD_VALUE: Final = 114


@dataclass(frozen=True)
class Letterbox:
    """Where an original frame sits on the network canvas: `canvas = original * scale + (pad_x, pad_y)`."""

    scale: float
    pad_x: int
    pad_y: int
    width: int
    height: int

    def boxes_to_original(self, boxes: NDArray[np.float32], frame_width: int, frame_height: int) -> NDArray[np.float32]:
        """Map x1, y1, x2, y2 boxes from canvas pixels back to the original frame, clipped to it."""
        mapped = boxes.astype(np.float32, copy=True)
        mapped[:, [0, 2]] = (mapped[:, [0, 2]] - self.pad_x) / self.scale
        mapped[:, [1, 3]] = (mapped[:, [1, 3]] - self.pad_y) / self.scale
        mapped[:, [0, 2]] = mapped[:, [0, 2]].clip(0, frame_width)
        mapped[:, [1, 3]] = mapped[:, [1, 3]].clip(0, frame_height)
        return mapped

    def boxes_to_canvas(self, boxes: NDArray[np.float32]) -> NDArray[np.float32]:
        mapped = boxes.astype(np.float32, copy=True) * np.float32(self.scale)
        mapped[:, [0, 2]] += self.pad_x
        mapped[:, [1, 3]] += self.pad_y
        return mapped


def letterbox_geometry(frame_width: int, frame_height: int, width: int, height: int) -> tuple[int, int, Letterbox]:
    """The resized (width, height) of the frame and its placement on a `width` x `height` canvas."""
    scale = min(width / frame_width, height / frame_height)
    resized_w, resized_h = round(frame_width * scale), round(frame_height * scale)
    pad_x = round((width - resized_w) / 2 - 0.1)
    pad_y = round((height - resized_h) / 2 - 0.1)
    return resized_w, resized_h, Letterbox(scale=scale, pad_x=pad_x, pad_y=pad_y, width=width, height=height)


def letterbox(image: NDArray[np.uint8], width: int, height: int) -> tuple[NDArray[np.uint8], Letterbox]:
    """`image` (H x W x 3) resized to fit `width` x `height` without distortion, centred on gray padding."""
    frame_height, frame_width = image.shape[:2]
    resized_w, resized_h, placement = letterbox_geometry(frame_width, frame_height, width, height)
    if (resized_w, resized_h) != (frame_width, frame_height):
        image = np.asarray(cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR), np.uint8)
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    canvas[placement.pad_y : placement.pad_y + resized_h, placement.pad_x : placement.pad_x + resized_w] = image
    return canvas, placement
