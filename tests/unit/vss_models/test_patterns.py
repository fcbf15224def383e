"""The pattern images the classifier learns from."""

from __future__ import annotations

import numpy as np

from vss_models.patterns import IMAGE_SIZE, PATTERN_CLASSES, generate_pattern_image


def test_there_are_at_least_ten_distinct_classes() -> None:
    assert len(set(PATTERN_CLASSES)) == len(PATTERN_CLASSES) >= 10


def test_the_same_seed_and_index_draw_the_same_image() -> None:
    assert np.array_equal(generate_pattern_image(4, 9).image, generate_pattern_image(4, 9).image)
    assert not np.array_equal(generate_pattern_image(4, 9).image, generate_pattern_image(5, 9).image)


def test_images_are_224_rgb_and_classes_cycle_through_the_stream() -> None:
    samples = [generate_pattern_image(1, i) for i in range(2 * len(PATTERN_CLASSES))]
    assert all(s.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and s.image.dtype == np.uint8 for s in samples)
    assert [s.class_id for s in samples] == list(range(len(PATTERN_CLASSES))) * 2


def test_colour_alone_does_not_give_the_class_away() -> None:
    means = np.array([generate_pattern_image(2, i).image.mean((0, 1)) for i in range(48)])
    labels = np.arange(48) % len(PATTERN_CLASSES)
    per_class = np.array([means[labels == c].mean(0) for c in range(len(PATTERN_CLASSES))])
    assert per_class.std(0).max() < means.std(0).max()
