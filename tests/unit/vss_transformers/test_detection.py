import numpy as np
import pytest

from vss_transformers.detection import (
    Detections,
    ModelLayout,
    as_v1_result,
    as_v2_tensors,
    decode_one,
    detect_layout,
    nms,
    postprocess,
)
from vss_transformers.letterbox import Letterbox

NAMES = ("person", "vehicle", "object")


def _v8(rows: list[tuple[float, float, float, float, list[float]]], anchors: int = 6) -> np.ndarray:
    """[4+nc, N]: cx, cy, w, h, class scores per anchor; unused anchors score 0."""
    out = np.zeros((4 + len(NAMES), anchors), np.float32)
    for i, (cx, cy, w, h, scores) in enumerate(rows):
        out[:4, i] = (cx, cy, w, h)
        out[4:, i] = scores
    return out


def test_yolov8_rows_decode_to_hand_computed_corner_boxes() -> None:
    raw = _v8([(50, 60, 20, 40, [0.9, 0.1, 0.0]), (200, 100, 10, 10, [0.0, 0.0, 0.7])])
    det = decode_one(raw, "yolov8", conf=0.5, iou=0.45, max_det=300)
    np.testing.assert_allclose(det.boxes, [[40, 40, 60, 80], [195, 95, 205, 105]])
    np.testing.assert_allclose(det.scores, [0.9, 0.7])
    assert det.class_ids.tolist() == [0, 2]


def test_yolov5_scores_are_objectness_times_class_probability() -> None:
    raw = np.zeros((4, 5 + len(NAMES)), np.float32)
    raw[0] = [50, 60, 20, 40, 0.8, 0.25, 0.75, 0.0]  # 0.8 * 0.75 = 0.6 for class 1
    raw[1] = [10, 10, 4, 4, 0.5, 0.9, 0.0, 0.0]  # 0.45: under the threshold
    det = decode_one(raw, "yolov5", conf=0.5, iou=0.45, max_det=300)
    np.testing.assert_allclose(det.boxes, [[40, 40, 60, 80]])
    np.testing.assert_allclose(det.scores, [0.6])
    assert det.class_ids.tolist() == [1]


def test_end_to_end_rows_are_taken_as_they_are_without_nms() -> None:
    raw = np.array([[10, 10, 50, 50, 0.9, 2], [12, 12, 52, 52, 0.8, 2], [0, 0, 0, 0, 0.0, 0]], np.float32)
    det = decode_one(raw, "end2end", conf=0.5, iou=0.45, max_det=300)
    np.testing.assert_allclose(det.boxes, [[10, 10, 50, 50], [12, 12, 52, 52]])
    assert det.class_ids.tolist() == [2, 2]


def test_nms_drops_a_lower_scored_box_that_overlaps_beyond_the_threshold() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, iou_threshold=0.5, limit=10).tolist() == [0, 2]
    assert nms(boxes, scores, iou_threshold=0.9, limit=10).tolist() == [0, 1, 2]
    assert nms(boxes, scores, iou_threshold=0.5, limit=1).tolist() == [0]


def test_nms_is_class_wise_so_overlapping_boxes_of_two_classes_both_survive() -> None:
    raw = _v8([(50, 50, 20, 20, [0.9, 0.0, 0.0]), (51, 51, 20, 20, [0.0, 0.8, 0.0]),
               (52, 52, 20, 20, [0.7, 0.0, 0.0])])
    det = decode_one(raw, "yolov8", conf=0.5, iou=0.45, max_det=300)
    assert det.class_ids.tolist() == [0, 1]


def test_postprocess_returns_boxes_in_original_pixels() -> None:
    raw = _v8([(320, 192, 64, 64, [0.0, 0.95, 0.0])])[None]
    info = Letterbox(scale=0.5, pad_x=0, pad_y=12, height=720, width=1280)
    layout = ModelLayout("yolov8", NAMES, 32, None)
    (det,) = postprocess(raw, [info], layout, 0.5, 0.45, 300)
    np.testing.assert_allclose(det.boxes, [[576, 296, 704, 424]])  # (288-0)/0.5, (160-12)/0.5, ...


@pytest.mark.parametrize(("shape", "meta", "expected"), [
    ((1, 7, 8400), {}, "yolov8"),
    ((-1, 84, -1), {}, "yolov8"),
    ((1, 25200, 8), {}, "yolov5"),
    ((-1, -1, 85), {}, "yolov5"),
    ((1, 300, 6), {}, "end2end"),
    ((1, 25200, 6), {}, "yolov5"),
    ((1, 300, 6), {"end2end": "True"}, "end2end"),
])
def test_the_layout_is_read_from_the_output_shape_and_metadata(shape: tuple[int, ...], meta: dict[str, str],
                                                               expected: str) -> None:
    n_names = 3 if shape[1] in (7, 8) or shape[2] in (7, 8) else (80 if 84 in shape or 85 in shape else 0)
    assert detect_layout(shape, meta, n_names) == expected


def test_v2_tensors_pad_shorter_rows_and_count_detections() -> None:
    one = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.9], np.float32), np.array([1], np.int32))
    none = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
    t = as_v2_tensors([one, none], NAMES)
    assert t["boxes"].shape == (2, 1, 4) and t["num_detections"].tolist() == [1, 0]
    assert t["labels"].tolist() == [[b"vehicle"], [b""]]


def test_the_v1_result_has_objects_with_class_confidence_bbox_and_center() -> None:
    det = Detections(np.array([[10, 20, 30, 60]], np.float32), np.array([0.876543], np.float32),
                     np.array([0], np.int32))
    out = as_v1_result(det, NAMES, 0.0123)
    assert out["total_objects"] == 1
    assert out["objects"] == [{"class": "person", "class_id": 0, "confidence": 0.8765,
                               "bbox": [10.0, 20.0, 30.0, 60.0], "center": [20.0, 40.0]}]


def test_yolov8_anchors_over_the_threshold_keep_their_best_class_and_score_as_a_per_anchor_argmax_gives() -> None:
    """The yolov8 decode takes the row-wise max first and the argmax only over candidates: same answer as the
    plain per-anchor argmax, ties (first class wins) included, on far-apart boxes NMS keeps all of."""
    rng = np.random.default_rng(7)
    n, nc = 400, 80
    raw = np.zeros((4 + nc, n), np.float32)
    raw[0], raw[1] = np.arange(n) * 100.0, np.arange(n) * 100.0  # centres far apart: no overlap
    raw[2], raw[3] = 20.0, 20.0
    raw[4:] = rng.random((nc, n), dtype=np.float32) * 0.4
    hot = rng.choice(n, 30, replace=False)
    raw[4 + rng.integers(0, nc, 30), hot] = 0.9
    raw[4 + 3, hot[0]] = raw[4 + 9, hot[0]] = 0.95  # a tie: class 3 first

    det = decode_one(raw, "yolov8", conf=0.5, iou=0.45, max_det=300)

    reference_ids = raw[4:].argmax(axis=0)
    reference_scores = raw[4:].max(axis=0)
    anchors = (det.boxes[:, 0] + 10.0) / 100.0
    assert sorted(np.rint(anchors).astype(int)) == sorted(hot.tolist())
    picked = np.rint(anchors).astype(int)
    np.testing.assert_array_equal(det.class_ids, reference_ids[picked])
    np.testing.assert_array_equal(det.scores, reference_scores[picked])
    assert int(det.class_ids[picked == hot[0]][0]) == 3
