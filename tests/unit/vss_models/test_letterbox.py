"""Letterboxing frames onto the square network canvas, and mapping boxes back."""

from __future__ import annotations

import numpy as np
import pytest

from vss_models.letterbox import PAD_VALUE, letterbox, letterbox_geometry


def test_a_720p_frame_is_halved_and_centred_between_gray_bands() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    canvas, placement = letterbox(frame, 640, 640)
    assert canvas.shape == (640, 640, 3)
    assert placement.scale == 0.5 and (placement.pad_x, placement.pad_y) == (0, 140)
    assert (canvas[:140] == PAD_VALUE).all() and (canvas[500:] == PAD_VALUE).all()
    assert (canvas[140:500] == 0).all()


def test_odd_padding_puts_the_extra_row_below_as_ultralytics_does() -> None:
    resized_w, resized_h, placement = letterbox_geometry(640, 481, 640, 640)
    assert (resized_w, resized_h) == (640, 481)
    assert placement.pad_y == 79  # 159 rows of padding: 79 above, 80 below


def test_boxes_map_to_the_canvas_and_back() -> None:
    _, _, placement = letterbox_geometry(1920, 1080, 640, 640)
    boxes = np.array([[100, 200, 500, 900], [0, 0, 1920, 1080]], np.float32)
    canvas_boxes = placement.boxes_to_canvas(boxes)
    assert canvas_boxes[1] == pytest.approx([0, 140, 640, 500])
    assert placement.boxes_to_original(canvas_boxes, 1920, 1080) == pytest.approx(boxes, abs=1e-3)


def test_boxes_reaching_into_the_padding_are_clipped_to_the_frame() -> None:
    _, _, placement = letterbox_geometry(1280, 720, 640, 640)
    back = placement.boxes_to_original(np.array([[-10, 100, 650, 600]], np.float32), 1280, 720)
    assert back[0] == pytest.approx([0, 0, 1280, 720])
