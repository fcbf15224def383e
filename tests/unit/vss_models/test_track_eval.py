"""The tracking scorer: perfect tracks score perfectly, and each kind of tracking error costs what CLEAR MOT and
IDF1 say it should (identity switches, misses, false positives, a wrong class, a box off by more than IoU 0.5)."""

from __future__ import annotations

import random
from dataclasses import replace
from functools import cache

import numpy as np
import pytest

from vss_models.clips import ClipSpec, TruthBox, crossing_clip
from vss_models.track_eval import iou_distance, passing_clip, perfect_tracks, score


@cache
def small_clip() -> tuple[ClipSpec, tuple[TruthBox, ...]]:
    spec = crossing_clip(frames=60, width=320, height=180)
    return spec, tuple(perfect_tracks(spec))


def frames_of(spec: ClipSpec) -> range:
    return range(spec.frames)


def test_the_truth_scored_against_itself_is_perfect() -> None:
    spec, truth = small_clip()

    scores = score(truth, truth, frames_of(spec))

    assert scores.mota == pytest.approx(1.0) and scores.idf1 == pytest.approx(1.0)
    assert scores.id_switches == 0 and scores.false_positives == 0 and scores.misses == 0
    assert scores.precision == pytest.approx(1.0) and scores.recall == pytest.approx(1.0)
    assert scores.motp == pytest.approx(0.0)
    assert scores.true_tracks == len({b.track_id for b in truth}) and scores.mostly_tracked == scores.true_tracks
    assert scores.frames == spec.frames and scores.true_boxes == scores.tracked_boxes == len(truth)


def test_other_track_numbers_than_the_truth_cost_nothing_when_they_are_kept() -> None:
    spec, truth = small_clip()
    renamed = [replace(b, track_id=100 + 7 * b.track_id) for b in truth]

    scores = score(truth, renamed, frames_of(spec))

    assert scores.mota == pytest.approx(1.0) and scores.idf1 == pytest.approx(1.0) and scores.id_switches == 0


def test_identities_shuffled_on_every_frame_are_switches_and_ruin_idf1_but_not_recall() -> None:
    spec, truth = small_clip()
    rng = random.Random(3)
    shuffled: list[TruthBox] = []
    for frame in frames_of(spec):
        boxes = [b for b in truth if b.frame == frame]
        # fresh numbers every frame: no track lives longer than one frame
        ids = rng.sample(range(10_000), len(boxes))
        shuffled += [replace(b, track_id=i) for b, i in zip(boxes, ids, strict=True)]

    scores = score(truth, shuffled, frames_of(spec))

    assert scores.recall == pytest.approx(1.0) and scores.precision == pytest.approx(1.0)
    assert scores.id_switches > len(truth) // 2
    assert scores.idf1 < 0.2
    assert scores.mota == pytest.approx(1.0 - scores.id_switches / len(truth))


def test_two_tracks_that_swap_identities_halfway_are_two_switches() -> None:
    frames = range(20)
    truth = [TruthBox(f, t, "person", (10.0 + 100 * t, 10.0, 50.0 + 100 * t, 90.0)) for f in frames for t in (1, 2)]
    swapped = [replace(b, track_id=(3 - b.track_id) if b.frame >= 10 else b.track_id) for b in truth]

    scores = score(truth, swapped, frames)

    assert scores.id_switches == 2
    assert scores.mota == pytest.approx(1.0 - 2 / 40)
    assert scores.idf1 == pytest.approx(0.5)


def test_a_missed_half_of_the_frames_halves_recall_and_mota() -> None:
    spec, truth = small_clip()
    kept = [b for b in truth if b.frame % 2 == 0]

    scores = score(truth, kept, frames_of(spec))

    assert scores.precision == pytest.approx(1.0)
    assert scores.recall == pytest.approx(len(kept) / len(truth))
    assert scores.misses == len(truth) - len(kept)
    assert scores.mota == pytest.approx(len(kept) / len(truth))


def test_a_box_moved_past_iou_one_half_is_a_miss_and_a_false_positive_and_within_it_a_match() -> None:
    box = (100.0, 100.0, 140.0, 200.0)  # 40 wide
    truth = [TruthBox(0, 1, "person", box)]
    near = [TruthBox(0, 5, "person", (110.0, 100.0, 150.0, 200.0))]  # IoU 30/50 = 0.6
    far = [TruthBox(0, 5, "person", (120.0, 100.0, 160.0, 200.0))]  # IoU 20/60 = 0.33

    matched, unmatched = score(truth, near, [0]), score(truth, far, [0])

    assert matched.misses == 0 and matched.false_positives == 0 and matched.motp == pytest.approx(0.4)
    assert unmatched.misses == 1 and unmatched.false_positives == 1 and unmatched.mota == pytest.approx(-1.0)


def test_a_box_of_the_wrong_class_matches_nothing() -> None:
    truth = [TruthBox(0, 1, "person", (0.0, 0.0, 10.0, 10.0))]
    vehicle = [TruthBox(0, 1, "vehicle", (0.0, 0.0, 10.0, 10.0))]

    scores = score(truth, vehicle, [0])

    assert scores.misses == 1 and scores.false_positives == 1


def test_frames_that_were_not_inferred_are_not_scored() -> None:
    spec, truth = small_clip()
    every_third = range(0, spec.frames, 3)
    sampled = [b for b in truth if b.frame % 3 == 0]

    scores = score(truth, sampled, every_third)

    assert scores.frames == len(every_third) and scores.recall == pytest.approx(1.0)
    assert scores.true_boxes == len(sampled)


def test_iou_distance_is_one_minus_iou_and_none_past_the_limit() -> None:
    distance = iou_distance([(0.0, 0.0, 10.0, 10.0)], [(0.0, 0.0, 10.0, 10.0), (5.0, 0.0, 15.0, 10.0),
                                                       (50.0, 50.0, 60.0, 60.0)])

    assert distance[0, 0] == pytest.approx(0.0)
    assert np.isnan(distance[0, 1])  # IoU 1/3: distance 2/3 > 0.5
    assert np.isnan(distance[0, 2])
    assert iou_distance([], [(0.0, 0.0, 1.0, 1.0)]).shape == (0, 1)


def test_the_passing_clip_makes_walks_hide_one_another() -> None:
    spec = passing_clip(frames=90, width=320, height=180)
    truth = perfect_tracks(spec)
    overlapping = 0
    for frame in range(spec.frames):
        boxes = [b.box for b in truth if b.frame == frame]
        distance = iou_distance(boxes, boxes, max_distance=0.999)
        overlapping += int(np.sum(~np.isnan(distance)) > len(boxes))
    assert overlapping >= 5
