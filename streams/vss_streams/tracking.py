"""Detections of one frame in, tracked objects out, through Roboflow's `trackers` (Apache-2.0 clean-room
ByteTrack, OC-SORT and SORT). The tracker keeps its own state; this module only adapts types and thresholds.

Timestamps go to the tracker, so a live stream that drops frames predicts motion over the real gap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv
from numpy.typing import NDArray
from trackers import ByteTrackTracker, OCSORTTracker, SORTTracker

from vss_api.vssstream import Tracker, Tracking
from vss_streams.analytics import TrackedObject


@dataclass(frozen=True)
class FrameDetections:
    """One frame's detections as the detection VSSModel answers them (its `boxes`, `scores`, `class_ids`)."""

    boxes: NDArray[np.float32]  # [K, 4] x1, y1, x2, y2 in pixels of the frame
    scores: NDArray[np.float32]  # [K]
    class_ids: NDArray[np.int32]  # [K]


class ObjectTracker:
    def __init__(self, tracking: Tracking, class_names: Sequence[str], frame_rate: float) -> None:
        self.tracking = tracking
        self.class_names = tuple(class_names)
        self._tracker = _make(tracking, frame_rate)

    def update(self, detections: FrameDetections, timestamp: float) -> list[TrackedObject]:
        keep = detections.scores >= self.tracking.min_confidence
        found = sv.Detections(xyxy=detections.boxes[keep].astype(np.float32).reshape(-1, 4),
                              confidence=detections.scores[keep].astype(np.float32),
                              class_id=detections.class_ids[keep].astype(int))
        tracked = self._tracker.update(found, timestamp=timestamp)
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.full(len(tracked), -1)
        classes = tracked.class_id if tracked.class_id is not None else np.zeros(len(tracked), int)
        scores = tracked.confidence if tracked.confidence is not None else np.ones(len(tracked), np.float32)
        return [TrackedObject(int(track_id), self._name(int(class_id)), _box(xyxy), float(score))
                for xyxy, track_id, class_id, score in zip(tracked.xyxy, ids, classes, scores, strict=True)
                if track_id >= 0]

    def _name(self, class_id: int) -> str:
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)


def _box(xyxy: NDArray[np.float32]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return (x1, y1, x2, y2)


def _make(tracking: Tracking, frame_rate: float) -> ByteTrackTracker | OCSORTTracker | SORTTracker:
    # The tracker confirms a track after a few consecutive frames; the analytics' min_track_age counts
    # separately, so a track is never reported before the tracker itself trusts it.
    buffer, high = tracking.lost_track_buffer, max(tracking.min_confidence, 0.5)
    if tracking.tracker is Tracker.BYTETRACK:
        return ByteTrackTracker(lost_track_buffer=buffer, frame_rate=frame_rate, track_activation_threshold=high,
                                high_conf_det_threshold=high)
    if tracking.tracker is Tracker.OCSORT:
        return OCSORTTracker(lost_track_buffer=buffer, frame_rate=frame_rate, high_conf_det_threshold=high)
    return SORTTracker(lost_track_buffer=buffer, frame_rate=frame_rate,
                       track_activation_threshold=tracking.min_confidence)
