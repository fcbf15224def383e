"""Synthetic surveillance clips with known trajectories: the ground truth of the stream tests.

A fixed backdrop from the scene generator, people and vehicles (the detector's own classes, drawn by the
same sprite code it was trained on) walking straight paths at constant speed, written as H.264 MP4 through
PyAV. Every frame's boxes and identities are known, so line crossings, zone visits and tracking quality
(MOTA, IDF1) can be scored exactly. Deterministic from the seed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from vss_models.scenes import (
    DETECTION_CLASSES,
    PERSON,
    VEHICLE,
    Sprite,
    backdrop,
    clutter,
    composite,
    draw_person,
    draw_vehicle,
    scene_rng,
)


@dataclass(frozen=True)
class Actor:
    """One object's straight walk: its feet (bottom centre, in fractions of the frame) from `start` at
    `enter_frame` to `end` at `exit_frame`."""

    track_id: int
    class_id: int
    height: float  # fraction of the frame height
    start: tuple[float, float]
    end: tuple[float, float]
    enter_frame: int
    exit_frame: int

    def feet(self, frame: int) -> tuple[float, float] | None:
        if not self.enter_frame <= frame <= self.exit_frame:
            return None
        t = (frame - self.enter_frame) / max(1, self.exit_frame - self.enter_frame)
        return (self.start[0] + t * (self.end[0] - self.start[0]), self.start[1] + t * (self.end[1] - self.start[1]))


@dataclass(frozen=True)
class ClipSpec:
    seed: int = 7
    width: int = 1280
    height: int = 720
    fps: int = 15
    frames: int = 300
    actors: tuple[Actor, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TruthBox:
    frame: int
    track_id: int
    class_name: str
    box: tuple[float, float, float, float]


def crossing_clip(seed: int = 7, frames: int = 300, fps: int = 15, width: int = 1280, height: int = 720) -> ClipSpec:
    """Eight walks across a horizontal line at y = 0.55: five down (in), three up (out), people and
    vehicles, spread in time and across the frame so that they rarely overlap."""
    walks = [  # class, x, downward, enter (share of the clip), duration (share)
        (PERSON, 0.15, True, 0.00, 0.45), (VEHICLE, 0.45, True, 0.05, 0.35), (PERSON, 0.75, False, 0.10, 0.45),
        (PERSON, 0.30, True, 0.40, 0.45), (VEHICLE, 0.85, True, 0.45, 0.35), (PERSON, 0.60, False, 0.50, 0.45),
        (VEHICLE, 0.20, False, 0.55, 0.40), (PERSON, 0.50, True, 0.60, 0.38)]
    actors = []
    for i, (class_id, x, down, enter, duration) in enumerate(walks, start=1):
        top, bottom = (0.35, 0.95)
        start, end = ((x, top), (x + 0.04, bottom)) if down else ((x, bottom), (x - 0.04, top))
        actors.append(Actor(i, class_id, 0.22 if class_id == PERSON else 0.16, start, end,
                            int(enter * frames), min(frames - 1, int((enter + duration) * frames))))
    return ClipSpec(seed, width, height, fps, frames, tuple(actors))


def _sprites(spec: ClipSpec) -> dict[int, Sprite]:
    """Each actor's sprite, drawn once at its height (a walk keeps its look)."""
    drawn = {}
    for actor in spec.actors:
        rng = scene_rng(spec.seed, 1000 + actor.track_id)
        drawer = draw_person if actor.class_id == PERSON else draw_vehicle
        drawn[actor.track_id] = drawer(rng, max(8, int(actor.height * spec.height)))
    return drawn


def render_frames(spec: ClipSpec) -> tuple[list[NDArray[np.uint8]], list[TruthBox]]:
    rng = scene_rng(spec.seed, 0)
    horizon = int(spec.height * 0.2)
    ground = backdrop(rng, spec.width, spec.height, horizon)
    for sprite in clutter(rng, spec.width, spec.height, horizon):
        composite(ground, sprite)
    sprites = _sprites(spec)
    frames, truth = [], []
    for index in range(spec.frames):
        canvas = ground.copy()
        placed = []
        for actor in spec.actors:
            feet = actor.feet(index)
            if feet is None:
                continue
            sprite = sprites[actor.track_id]
            h, w = sprite.alpha.shape
            x, y = int(feet[0] * spec.width - w / 2), int(feet[1] * spec.height - h)
            placed.append((y + h, actor, Sprite(x, y, sprite.rgb, sprite.alpha)))
        for _, actor, sprite in sorted(placed, key=lambda p: p[0]):  # far (higher up) first
            composite(canvas, sprite)
            box = _visible_box(sprite, spec.width, spec.height)
            if box is not None:
                truth.append(TruthBox(index, actor.track_id, DETECTION_CLASSES[actor.class_id], box))
        frames.append(np.clip(canvas, 0, 255).astype(np.uint8))
    return frames, truth


def _visible_box(sprite: Sprite, width: int, height: int) -> tuple[float, float, float, float] | None:
    solid = sprite.alpha > 0.5
    ys, xs = np.nonzero(solid)
    if len(xs) == 0:
        return None
    x1, y1 = max(0, sprite.x + int(xs.min())), max(0, sprite.y + int(ys.min()))
    x2, y2 = min(width, sprite.x + int(xs.max()) + 1), min(height, sprite.y + int(ys.max()) + 1)
    return (float(x1), float(y1), float(x2), float(y2)) if x2 > x1 and y2 > y1 else None


def write_clip(spec: ClipSpec, path: Path) -> Path:
    """The clip as H.264 MP4 at `path`, and its ground truth beside it (`<path>.truth.json`)."""
    frames, truth = render_frames(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(spec.fps, 1))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "g": str(spec.fps)}
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    truth_path(path).write_text(json.dumps({
        "spec": {**asdict(spec), "actors": [asdict(a) for a in spec.actors]},
        "boxes": [asdict(b) for b in truth]}))
    return path


def truth_path(clip: Path) -> Path:
    return clip.with_name(clip.name + ".truth.json")


def true_crossings(spec: ClipSpec, start: tuple[float, float], end: tuple[float, float]
                   ) -> dict[tuple[str, str], int]:
    """How many walks cross the segment start->end, by (direction, class): `in` from its left to its right
    (on screen, y down), as VSSStream lines count. A straight walk crosses a segment at most once."""
    def side(p: tuple[float, float]) -> float:
        return (end[0] - start[0]) * (p[1] - start[1]) - (end[1] - start[1]) * (p[0] - start[0])

    counts: dict[tuple[str, str], int] = {}
    for actor in spec.actors:
        a, b = side(actor.start), side(actor.end)
        if a * b >= 0:
            continue
        # where the walk meets the line, as a share of the segment: within it, or past its ends
        t = a / (a - b)
        meet = (actor.start[0] + t * (actor.end[0] - actor.start[0]),
                actor.start[1] + t * (actor.end[1] - actor.start[1]))
        dx, dy = end[0] - start[0], end[1] - start[1]
        along = ((meet[0] - start[0]) * dx + (meet[1] - start[1]) * dy) / (dx * dx + dy * dy)
        if 0 <= along <= 1:
            key = ("in" if b > 0 else "out", DETECTION_CLASSES[actor.class_id])
            counts[key] = counts.get(key, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """`python -m vss_models.clips OUT.mp4`: the crossing clip the stream example and tests read."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "build/clips/crossing.mp4")
    print(write_clip(crossing_clip(), out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
