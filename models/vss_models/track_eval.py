"""Tracking quality of the stream worker, scored against the exact truth of generated clips.

Each clip (`vss_models.clips`) is decoded and sampled by a real `StreamWorker` (`exhaustive`, so every sampled
frame is inferred), every frame inferred by the detection VSSModel it is pointed at over v2 gRPC
(`DetectionClient`, as a deployed worker does) and tracked by `vss_streams.tracking.ObjectTracker`; a frame
listener records what the tracker answered. The tracks are scored per frame against the clip's truth boxes
and identities with motmetrics (CLEAR MOT and identity metrics): a tracked box matches a true box of the same
class when their IoU is at least 0.5 (IoU distance at most 0.5), one to one, Hungarian as motmetrics does.

    python -m vss_models.track_eval --grpc 127.0.0.1:8081 --out build/reports/tracking.json

Results and what they mean: models/cards/tracking.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import motmetrics as mm  # type: ignore[import-untyped]
import numpy as np
from numpy.typing import NDArray

from vss_api.vssstream import VSSStreamSpec
from vss_models.clips import Actor, ClipSpec, TruthBox, crossing_clip, render_frames, truth_path, write_clip
from vss_models.scenes import PERSON, VEHICLE

if TYPE_CHECKING:
    from vss_streams.analytics import Event, TrackedObject
    from vss_streams.source import Frame

TRACKERS = ("bytetrack", "ocsort", "sort")
FRAME_RATES = (15.0, 5.0)
MAX_IOU_DISTANCE = 0.5
Box = tuple[float, float, float, float]


def passing_clip(seed: int = 11, frames: int = 300, fps: int = 15, width: int = 1280, height: int = 720
                 ) -> ClipSpec:
    """Harder than `crossing_clip`: people and vehicles walking across the frame in opposite directions at
    nearly the same depth, so that pairs pass in front of each other (one hides the other for a moment) and a
    tracker must keep both identities through it."""
    walks = [  # class, feet y, left to right, enter (share of the clip), duration (share)
        (PERSON, 0.70, True, 0.00, 0.55), (PERSON, 0.72, False, 0.03, 0.55),
        (VEHICLE, 0.86, True, 0.18, 0.45), (PERSON, 0.62, False, 0.22, 0.50),
        (PERSON, 0.78, True, 0.40, 0.50), (PERSON, 0.79, False, 0.44, 0.50),
        (VEHICLE, 0.56, False, 0.50, 0.45), (PERSON, 0.92, True, 0.55, 0.40)]
    actors = []
    for i, (class_id, y, rightward, enter, duration) in enumerate(walks, start=1):
        left, right = (0.08, y), (0.92, y + 0.02)
        start, end = (left, right) if rightward else (right, left)
        actors.append(Actor(i, class_id, 0.22 if class_id == PERSON else 0.16, start, end,
                            int(enter * frames), min(frames - 1, int((enter + duration) * frames))))
    return ClipSpec(seed, width, height, fps, frames, tuple(actors))


CLIPS = {"crossing": crossing_clip, "passing": passing_clip}


@dataclass(frozen=True)
class TrackScores:
    """One tracker on one clip at one sampling rate. Rates are fractions (1.0 is perfect)."""

    clip: str
    tracker: str
    fps: float
    mota: float  # 1 - (misses + false positives + identity switches) / true boxes
    motp: float  # mean IoU distance (1 - IoU) of the matched pairs: lower is tighter
    idf1: float  # F1 of boxes given the right identity, over the whole clip
    id_switches: int
    fragmentations: int
    precision: float
    recall: float
    false_positives: int
    misses: int
    frames: int
    true_boxes: int
    tracked_boxes: int
    true_tracks: int
    mostly_tracked: int  # true tracks covered for at least 80 % of their life
    mostly_lost: int  # ... for at most 20 %


def iou_distance(truth: Sequence[Box], tracked: Sequence[Box], max_distance: float = MAX_IOU_DISTANCE
                 ) -> NDArray[np.float64]:
    """1 - IoU of every true box (rows) against every tracked box (columns), x1 y1 x2 y2; NaN (no match
    allowed) where it exceeds `max_distance`. (motmetrics' own iou_matrix calls a NumPy 1 function.)"""
    if not truth or not tracked:
        return np.empty((len(truth), len(tracked)))
    a, b = np.asarray(truth, np.float64)[:, None, :], np.asarray(tracked, np.float64)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    distance: NDArray[np.float64] = 1.0 - inter / np.maximum(area_a + area_b - inter, 1e-9)
    distance[distance > max_distance] = np.nan
    return distance


def score(truth: Iterable[TruthBox], tracked: Iterable[TruthBox], frames: Iterable[int], *, clip: str = "",
          tracker: str = "", fps: float = 0.0) -> TrackScores:
    """The tracks against the truth over `frames` (the frames that were inferred): boxes match only within
    a class. A frame with no truth and no tracks still counts as a frame."""
    by_frame_truth: dict[int, list[TruthBox]] = defaultdict(list)
    by_frame_tracked: dict[int, list[TruthBox]] = defaultdict(list)
    for box in truth:
        by_frame_truth[box.frame].append(box)
    for box in tracked:
        by_frame_tracked[box.frame].append(box)
    accumulator = mm.MOTAccumulator(auto_id=False)
    for frame in sorted(set(frames)):
        objects, hypotheses = by_frame_truth.get(frame, []), by_frame_tracked.get(frame, [])
        distance = iou_distance([o.box for o in objects], [h.box for h in hypotheses])
        for i, o in enumerate(objects):
            for j, h in enumerate(hypotheses):
                if o.class_name != h.class_name:
                    distance[i, j] = np.nan
        accumulator.update([o.track_id for o in objects], [h.track_id for h in hypotheses], distance,
                           frameid=frame)
    names = ["mota", "motp", "idf1", "num_switches", "num_fragmentations", "precision", "recall",
             "num_false_positives", "num_misses", "num_frames", "num_objects", "num_predictions",
             "num_unique_objects", "mostly_tracked", "mostly_lost"]
    row = mm.metrics.create().compute(accumulator, metrics=names, name="tracks").iloc[0].to_dict()

    def rate(name: str) -> float:
        value = float(row[name])
        return 0.0 if math.isnan(value) else value

    return TrackScores(clip, tracker, fps, rate("mota"), rate("motp"), rate("idf1"), int(row["num_switches"]),
                       int(row["num_fragmentations"]), rate("precision"), rate("recall"),
                       int(row["num_false_positives"]), int(row["num_misses"]), int(row["num_frames"]),
                       int(row["num_objects"]), int(row["num_predictions"]), int(row["num_unique_objects"]),
                       int(row["mostly_tracked"]), int(row["mostly_lost"]))


def stream_spec(clip: Path, tracker: str, fps: float) -> VSSStreamSpec:
    return VSSStreamSpec.model_validate({
        "source": {"url": f"file://{clip.resolve()}"}, "model": {"name": "detector"},
        "sampling": {"fps": fps, "mode": "exhaustive"}, "tracking": {"tracker": tracker}})


async def track_clip(clip: Path, clip_fps: int, grpc: str, tracker: str, fps: float, *, model: str = "detector",
                     timeout_s: float = 30.0) -> tuple[list[TruthBox], list[int]]:
    """The clip through a `StreamWorker` against the served model: every tracked box, on the frame number of
    the clip it was decoded from, and the frame numbers that were inferred."""
    # Imported here: KServe (under the gRPC stubs) reads sys.argv when first imported, and `--grpc` is an
    # ambiguous abbreviation of its own flags; main() has read ours by then and hides them.
    from vss_streams.inference import DetectionClient
    from vss_streams.worker import StreamWorker

    tracked: list[TruthBox] = []
    inferred: list[int] = []

    def listen(frame: Frame, objects: list[TrackedObject], _events: list[Event]) -> None:
        number = round(frame.time * clip_fps)
        inferred.append(number)
        tracked.extend(TruthBox(number, o.track_id, o.class_name, o.box) for o in objects)

    client = DetectionClient(grpc, model, timeout_s=timeout_s)
    try:
        worker = StreamWorker(f"track-eval-{tracker}", stream_spec(clip, tracker, fps), client)
        worker.frame_listeners.append(listen)
        report = await worker.run()
    finally:
        await client.close()
    if report.frames_dropped_model:
        raise RuntimeError(f"{report.frames_dropped_model} frames were not answered by the model at {grpc}")
    return tracked, inferred


def load_truth(clip: Path) -> tuple[int, list[TruthBox]]:
    data = json.loads(truth_path(clip).read_text())
    boxes = [TruthBox(b["frame"], b["track_id"], b["class_name"], tuple(b["box"])) for b in data["boxes"]]
    return int(data["spec"]["fps"]), boxes


def ensure_clip(name: str, folder: Path) -> Path:
    """The named generated clip in `folder`, written (with its truth) unless it is there already."""
    path = folder / f"{name}.mp4"
    if not (path.exists() and truth_path(path).exists()):
        write_clip(CLIPS[name](), path)
    return path


def evaluate(grpc: str, clips: Mapping[str, Path], trackers: Sequence[str] = TRACKERS,
             frame_rates: Sequence[float] = FRAME_RATES, *, model: str = "detector") -> list[TrackScores]:
    results = []
    for name, clip in clips.items():
        clip_fps, truth = load_truth(clip)
        for tracker in trackers:
            for fps in frame_rates:
                tracked, inferred = asyncio.run(track_clip(clip, clip_fps, grpc, tracker, fps, model=model))
                results.append(score(truth, tracked, inferred, clip=name, tracker=tracker, fps=fps))
    return results


def perfect_tracks(spec: ClipSpec) -> list[TruthBox]:
    """The truth itself, as a tracker that never errs would answer it (a check of the scoring)."""
    return render_frames(spec)[1]


def table(results: Sequence[TrackScores]) -> str:
    lines = ["| clip | tracker | fps | MOTA | IDF1 | ID switches | precision | recall | MOTP (1-IoU) | "
             "mostly tracked |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.clip} | {r.tracker} | {r.fps:g} | {r.mota:.3f} | {r.idf1:.3f} | {r.id_switches} | "
              f"{r.precision:.3f} | {r.recall:.3f} | {r.motp:.3f} | {r.mostly_tracked}/{r.true_tracks} |"
              for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vss_models.track_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc", required=True, help="v2 gRPC address of the served detector, HOST:PORT")
    parser.add_argument("--model", default="detector", help="the model's name on that server")
    parser.add_argument("--clips", default=",".join(CLIPS), help=f"generated clips, of {', '.join(CLIPS)}")
    parser.add_argument("--clip-dir", type=Path, default=Path("build/clips"))
    parser.add_argument("--trackers", default=",".join(TRACKERS))
    parser.add_argument("--fps", default=",".join(f"{f:g}" for f in FRAME_RATES), help="sampling rates")
    parser.add_argument("--out", type=Path, default=Path("build/reports/tracking.json"))
    args = parser.parse_args(argv)
    sys.argv[1:] = []
    clips = {name: ensure_clip(name, args.clip_dir) for name in args.clips.split(",")}
    results = evaluate(args.grpc, clips, args.trackers.split(","), [float(f) for f in args.fps.split(",")],
                       model=args.model)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"max_iou_distance": MAX_IOU_DISTANCE, "model": args.model,
                                    "results": [asdict(r) for r in results]}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
