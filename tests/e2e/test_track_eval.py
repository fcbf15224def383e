"""Tracking quality of the stream worker on generated clips with exact truth: every frame inferred by the shipped
detector served by a real `vss run examples/detection.yaml` over v2 gRPC, tracked by each of the trackers a
VSSStream offers, scored with motmetrics (vss_models.track_eval). The floors sit well below what was measured
(models/cards/tracking.md: MOTA 0.80-0.95, IDF1 0.88-0.97, at most one identity switch) and far above what
a broken tracker scores (a tracker that renumbers its tracks every frame scores IDF1 near 0)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.serving import Served
from vss_models.clips import write_clip
from vss_models.track_eval import CLIPS, TRACKERS, TrackScores, load_truth, score, track_clip

# clip: (MOTA, IDF1, identity switches at most); measured 0.87-0.95 / 0.93-0.97 / 0 on crossing and
# 0.80-0.92 / 0.88-0.94 / 1 on passing.
FLOORS = {"crossing": (0.75, 0.85, 1), "passing": (0.65, 0.75, 3)}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {name: write_clip(make(), folder / f"{name}.mp4") for name, make in CLIPS.items()}


def tracked_scores(served: Served, clip: Path, name: str, tracker: str, fps: float) -> TrackScores:
    clip_fps, truth = load_truth(clip)
    tracked, inferred = asyncio.run(asyncio.wait_for(
        track_clip(clip, clip_fps, served.grpc_url, tracker, fps), timeout=240))
    assert len(inferred) == len(set(inferred)) == 300 * fps // 15
    return score(truth, tracked, inferred, clip=name, tracker=tracker, fps=fps)


@pytest.mark.parametrize("fps", [15.0, 5.0], ids=["every-frame", "every-third-frame"])
@pytest.mark.parametrize("tracker", TRACKERS)
@pytest.mark.parametrize("clip_name", sorted(CLIPS))
def test_each_tracker_keeps_the_identities_of_the_walks_through_the_served_detector(
        shipped_detector: Served, clips: dict[str, Path], clip_name: str, tracker: str, fps: float) -> None:
    scores = tracked_scores(shipped_detector, clips[clip_name], clip_name, tracker, fps)

    mota, idf1, switches = FLOORS[clip_name]
    assert scores.mota > mota, scores
    assert scores.idf1 > idf1, scores
    assert scores.id_switches <= switches, scores
    assert scores.precision > 0.95, scores
    assert scores.mostly_tracked >= scores.true_tracks - 3, scores


def test_bytetrack_on_every_frame_of_the_crossing_clip_is_nearly_perfect(
        shipped_detector: Served, clips: dict[str, Path]) -> None:
    """The stream example's own setting (ByteTrack, 15 fps): the figure the card leads with."""
    scores = tracked_scores(shipped_detector, clips["crossing"], "crossing", "bytetrack", 15.0)

    assert scores.mota > 0.9 and scores.idf1 > 0.93, scores
    assert scores.id_switches == 0 and scores.mostly_tracked == scores.true_tracks, scores
