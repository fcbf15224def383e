"""Letterboxing frames onto the model input (the one letterbox serving, training and evaluation share),
and mapping boxes back."""

import numpy as np
import pytest

from vss_transformers.letterbox import (
    PAD_VALUE,
    fitted_size,
    letterbox,
    letterbox_geometry,
    target_shape,
    unletterbox,
)


def test_a_16_by_9_frame_letterboxes_to_the_smallest_stride_multiple_rectangle() -> None:
    assert fitted_size((720, 1280), 640) == (360, 640)
    assert target_shape([(720, 1280)], 640, 32, rectangular=True) == (384, 640)


def test_a_square_target_is_used_when_rectangles_are_off() -> None:
    assert target_shape([(720, 1280)], 640, 32, rectangular=False) == (640, 640)


def test_a_static_model_input_wins_over_any_rectangle() -> None:
    assert target_shape([(720, 1280)], 640, 32, rectangular=True, fixed=(640, 640)) == (640, 640)


def test_a_mixed_batch_gets_one_shape_that_holds_every_image() -> None:
    assert target_shape([(720, 1280), (480, 640)], 640, 32, rectangular=True) == (480, 640)


def test_letterbox_centres_the_scaled_image_and_pads_with_grey() -> None:
    image = np.full((720, 1280, 3), 200, np.uint8)
    out, info = letterbox(image, (384, 640))
    assert out.shape == (384, 640, 3)
    assert info.scale == pytest.approx(0.5)
    assert (info.pad_x, info.pad_y) == (0, 12)
    assert (out[:12] == PAD_VALUE).all() and (out[-12:] == PAD_VALUE).all()
    assert (out[12:372] == 200).all()


def test_unletterbox_maps_model_pixels_back_to_original_pixels_and_clips() -> None:
    _, info = letterbox(np.zeros((720, 1280, 3), np.uint8), (384, 640))
    boxes = np.array([[100, 62, 200, 112], [-10, 0, 700, 400]], np.float32)
    back = unletterbox(boxes, info)
    np.testing.assert_allclose(back[0], [200, 100, 400, 200])
    np.testing.assert_allclose(back[1], [0, 0, 1280, 720])


def test_letterbox_then_unletterbox_is_the_identity_on_a_box() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    _, info = letterbox(image, (640, 640))
    box = np.array([[10.0, 20.0, 300.0, 400.0]], np.float32)
    forward = box * info.scale + np.array([info.pad_x, info.pad_y, info.pad_x, info.pad_y], np.float32)
    np.testing.assert_allclose(unletterbox(forward, info), box, atol=1e-4)


def test_boxes_of_a_reduced_decode_map_back_to_the_source_pixels() -> None:
    reduced = np.zeros((360, 640, 3), np.uint8)  # a 1280x720 source decoded at half scale
    _, info = letterbox(reduced, (384, 640), source_hw=(720, 1280))
    assert (info.height, info.width) == (720, 1280)
    back = unletterbox(np.array([[100, 62, 200, 112]], np.float32), info)
    np.testing.assert_allclose(back, [[200, 100, 400, 200]])


def test_a_720p_frame_is_halved_and_centred_between_gray_bands_on_the_square_canvas() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    canvas, info = letterbox(frame, (640, 640))
    assert canvas.shape == (640, 640, 3)
    assert info.scale == 0.5 and (info.pad_x, info.pad_y) == (0, 140)
    assert (canvas[:140] == PAD_VALUE).all() and (canvas[500:] == PAD_VALUE).all()
    assert (canvas[140:500] == 0).all()


def test_odd_padding_puts_the_extra_row_below_as_ultralytics_does() -> None:
    (resized_h, resized_w), info = letterbox_geometry((481, 640), (640, 640))
    assert (resized_h, resized_w) == (481, 640)
    assert info.pad_y == 79  # 159 rows of padding: 79 above, 80 below
    canvas, _ = letterbox(np.zeros((481, 640, 3), np.uint8), (640, 640))
    assert (canvas[:79] == PAD_VALUE).all() and (canvas[79:560] == 0).all() and (canvas[560:] == PAD_VALUE).all()


def test_the_geometry_is_the_placement_letterbox_uses() -> None:
    image = np.zeros((1080, 1920, 3), np.uint8)
    (resized_h, resized_w), info = letterbox_geometry((1080, 1920), (640, 640))
    assert (resized_h, resized_w) == (360, 640)
    assert letterbox(image, (640, 640))[1] == info


def test_boxes_map_to_the_square_canvas_and_back() -> None:
    _, info = letterbox_geometry((1080, 1920), (640, 640))
    boxes = np.array([[100, 200, 500, 900], [0, 0, 1920, 1080]], np.float32)
    canvas_boxes = boxes * np.float32(info.scale) + np.array([info.pad_x, info.pad_y] * 2, np.float32)
    assert canvas_boxes[1] == pytest.approx([0, 140, 640, 500])
    assert unletterbox(canvas_boxes, info) == pytest.approx(boxes, abs=1e-3)


def test_boxes_reaching_into_the_square_canvas_padding_are_clipped_to_the_frame() -> None:
    _, info = letterbox_geometry((720, 1280), (640, 640))
    back = unletterbox(np.array([[-10, 100, 650, 600]], np.float32), info)
    assert back[0] == pytest.approx([0, 0, 1280, 720])


@pytest.mark.parametrize("hw", [(1, 2000), (2000, 1), (1, 65535), (65535, 1)])
def test_an_extreme_strip_letterboxes_to_at_least_one_row_or_column(hw: tuple[int, int]) -> None:
    shape = target_shape([hw], 640, 32, rectangular=True)
    out, info = letterbox(np.full((*hw, 3), 9, np.uint8), shape)
    assert out.shape == (*shape, 3)
    assert int((out == 9).all(axis=2).sum()) == 640  # the strip itself: 640 pixels along its long side
    box = unletterbox(np.array([[0, 0, shape[1], shape[0]]], np.float32), info)
    np.testing.assert_allclose(box[0], [0, 0, hw[1], hw[0]])  # the whole frame maps back to the strip
