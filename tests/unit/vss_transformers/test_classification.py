import numpy as np

from vss_transformers.classification import resize_and_crop, softmax, to_probabilities, top_k


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
