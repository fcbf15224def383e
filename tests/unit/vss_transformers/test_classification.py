import cv2
import numpy as np
import pytest

from vss_transformers.classification import crop_region, resize_and_crop, softmax, to_probabilities, top_k


def test_resize_then_centre_crop_gives_the_input_size() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, 320:] = 255
    out = resize_and_crop(image, 256, 224)
    assert out.shape == (224, 224, 3)
    assert out[:, :100].max() == 0 and out[:, 130:].min() == 255


def test_logits_get_a_softmax_and_probabilities_do_not() -> None:
    logits = np.array([[2.0, 1.0, 0.1]], np.float32)
    np.testing.assert_allclose(to_probabilities(logits, "auto"), softmax(logits))
    probs = np.array([[0.7, 0.2, 0.1]], np.float32)
    np.testing.assert_allclose(to_probabilities(probs, "auto"), probs)
    np.testing.assert_allclose(to_probabilities(probs, "always"), softmax(probs))


def test_top_k_returns_the_best_classes_in_descending_order() -> None:
    probs = np.array([[0.1, 0.5, 0.05, 0.35], [0.7, 0.1, 0.1, 0.1]], np.float32)
    first, second = top_k(probs, 2)
    assert first.class_ids.tolist() == [1, 3]
    np.testing.assert_allclose(first.scores, [0.5, 0.35])
    assert second.class_ids.tolist()[0] == 0


def test_top_k_larger_than_the_class_count_returns_every_class() -> None:
    (only,) = top_k(np.array([[0.2, 0.8]], np.float32), 5)
    assert only.class_ids.tolist() == [1, 0]


def _resize_then_crop(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """The arithmetic before the crop came first: the whole image resized, then cropped."""
    h, w = image.shape[:2]
    r = resize / min(h, w)
    nh, nw = max(crop, round(h * r)), max(crop, round(w * r))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return resized[top:top + crop, left:left + crop]


@pytest.mark.parametrize("hw", [(480, 640), (720, 1280), (1080, 1920), (256, 256), (300, 200), (160, 120)])
def test_cropping_before_resizing_gives_the_pixels_of_resizing_before_cropping(hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    # A photo-like image: smooth gradients plus texture, where a resampling difference shows.
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    base = np.stack([xx * 255 / hw[1], yy * 255 / hw[0], (xx + yy) * 127 / sum(hw)], axis=-1)
    image = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 0)
    ours = resize_and_crop(image, 256, 224).astype(np.float32)
    before = _resize_then_crop(image, 256, 224).astype(np.float32)
    assert ours.shape == before.shape == (224, 224, 3)
    assert float(np.abs(ours - before).mean()) < 2.0  # of 255: within rounding of the crop's edge


def test_an_extreme_strip_is_cropped_before_it_is_resized_so_it_allocates_only_the_crop() -> None:
    strip = np.zeros((1, 10000, 3), np.uint8)
    strip[:, 5000:] = 200
    # Resized first, the strip would be 256x2560000 and its centre crop 224/256 of a source pixel wide.
    assert crop_region((1, 10000), 256, 224) == (0, 5000, 1, 1)
    out = resize_and_crop(strip, 256, 224)
    assert out.shape == (224, 224, 3) and int(out.min()) == int(out.max()) == 200


@pytest.mark.parametrize("hw", [(1, 2000), (2000, 1), (1, 65535), (3, 3), (1, 1)])
def test_any_image_of_at_least_one_pixel_gives_the_input_size(hw: tuple[int, int]) -> None:
    out = resize_and_crop(np.full((*hw, 3), 77, np.uint8), 256, 224)
    assert out.shape == (224, 224, 3) and int(out.min()) == int(out.max()) == 77
