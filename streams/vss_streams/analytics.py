"""Tracks in, events out: line crossings with a direction, zone enter/exit/dwell, and the counts behind them.
Pure: the worker feeds it each inferred frame's tracked objects; nothing here decodes, infers or sends.

Rules that keep counts right (what operators of DeepStream and Frigate ask for most):
- a track counts only once it is confirmed (`min_track_age` frames seen): flicker never makes an event;
- a side of a line, or in/out of a zone, changes only once the anchor is `margin` past the boundary, so an
  object standing on a line is not counted again and again;
- a crossing counts only where the path crosses the segment itself, not its extension;
- geometry is in fractions of the frame, so counts do not change with resolution (a reconnect may bring another);
- editing lines and zones keeps the state of those that did not change."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vss_api.vssstream import Analytics, Anchor, Direction, Line, Zone

Vec = tuple[float, float]


class EventKind(StrEnum):
    LINE_CROSSED = "lineCrossed"
    ZONE_ENTERED = "zoneEntered"
    ZONE_EXITED = "zoneExited"
    ZONE_DWELL = "zoneDwell"


@dataclass(frozen=True)
class TrackedObject:
    """One tracked detection of a frame, in pixels of that frame."""

    track_id: int
    class_name: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float = 1.0


@dataclass(frozen=True)
class Event:
    stream: str
    kind: EventKind
    name: str  # the line or zone
    class_name: str
    track_id: int
    time: float  # seconds, the frame's timestamp
    frame: int
    box: tuple[float, float, float, float]
    direction: Direction | None = None
    dwell_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "stream": self.stream, "kind": self.kind.value,
            ("line" if self.kind is EventKind.LINE_CROSSED else "zone"): self.name,
            "class": self.class_name, "trackId": self.track_id, "time": self.time, "frame": self.frame,
            "box": [round(v, 1) for v in self.box]}
        if self.direction is not None:
            document["direction"] = self.direction.value
        if self.dwell_seconds is not None:
            document["dwellSeconds"] = round(self.dwell_seconds, 3)
        return document


def anchor_point(box: tuple[float, float, float, float], width: int, height: int, anchor: Anchor) -> Vec:
    x1, y1, x2, y2 = box
    y = y2 if anchor is Anchor.BOTTOM_CENTER else (y1 + y2) / 2
    return ((x1 + x2) / 2 / width, y / height)


def _cross(a: Vec, b: Vec) -> float:
    return a[0] * b[1] - a[1] * b[0]


def _sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1])


def signed_distance(line: Line, point: Vec) -> float:
    """Distance of `point` from the line through from->to: positive on its right (on screen, y down)."""
    a, b = (line.start[0], line.start[1]), (line.end[0], line.end[1])
    direction = _sub(b, a)
    return _cross(direction, _sub(point, a)) / math.hypot(*direction)


def crosses_segment(line: Line, before: Vec, after: Vec) -> bool:
    """Whether the path before->after meets the segment from->to (its ends included)."""
    a, b = (line.start[0], line.start[1]), (line.end[0], line.end[1])
    r, s = _sub(b, a), _sub(after, before)
    denominator = _cross(r, s)
    if denominator == 0:
        return False
    t = _cross(_sub(before, a), s) / denominator
    u = _cross(_sub(before, a), r) / denominator
    return 0.0 <= t <= 1.0 and 0.0 <= u <= 1.0


def inside_polygon(polygon: Sequence[Vec], point: Vec) -> bool:
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, [*polygon[1:], polygon[0]], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def distance_to_boundary(polygon: Sequence[Vec], point: Vec) -> float:
    best = math.inf
    for a, b in zip(polygon, [*polygon[1:], polygon[0]], strict=True):
        ab, ap = _sub(b, a), _sub(point, a)
        length2 = ab[0] ** 2 + ab[1] ** 2
        t = 0.0 if length2 == 0 else max(0.0, min(1.0, (ap[0] * ab[0] + ap[1] * ab[1]) / length2))
        closest = (a[0] + t * ab[0], a[1] + t * ab[1])
        best = min(best, math.dist(point, closest))
    return best


@dataclass
class _LineState:
    side: int  # -1 left, +1 right
    point: Vec  # where the anchor last was clearly on that side


@dataclass
class _ZoneState:
    inside: bool
    announced: bool = False  # an enter event went out and no exit yet
    entered_at: float = 0.0
    dwell_sent: bool = False


@dataclass
class _Track:
    class_name: str
    seen: int = 0
    last_frame: int = 0
    last_time: float = 0.0
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    lines: dict[str, _LineState] = field(default_factory=dict)
    zones: dict[str, _ZoneState] = field(default_factory=dict)


class Analyzer:
    """The analytics of one stream. `update` once per inferred frame, in frame order."""

    def __init__(self, stream: str, analytics: Analytics, *, min_track_age: int, forget_after_frames: int) -> None:
        self.stream = stream
        self.min_track_age = min_track_age
        self.forget_after_frames = forget_after_frames
        self.line_counts: Counter[tuple[str, Direction, str]] = Counter()
        self._tracks: dict[int, _Track] = {}
        self._configure(analytics)

    def _configure(self, analytics: Analytics) -> None:
        self.analytics = analytics
        self._lines = {line.name: line for line in analytics.lines}
        self._zones = {zone.name: zone for zone in analytics.zones}
        self._polygons = {zone.name: [(p[0], p[1]) for p in zone.polygon] for zone in analytics.zones}

    def reconfigure(self, analytics: Analytics) -> None:
        """New lines and zones; a line or zone whose geometry and filters are unchanged keeps its track state."""
        kept_lines = {n for n, line in self._lines.items() if any(line == new for new in analytics.lines)}
        kept_zones = {n for n, zone in self._zones.items() if any(zone == new for new in analytics.zones)}
        for track in self._tracks.values():
            track.lines = {n: s for n, s in track.lines.items() if n in kept_lines}
            track.zones = {n: s for n, s in track.zones.items() if n in kept_zones}
        self._configure(analytics)

    def occupancy(self) -> Counter[tuple[str, str]]:
        """Confirmed tracks inside each zone now, by (zone, class)."""
        return Counter((name, t.class_name) for t in self._tracks.values()
                       for name, z in t.zones.items() if z.announced)

    def update(self, objects: Iterable[TrackedObject], width: int, height: int, time: float,
               frame: int) -> list[Event]:
        events: list[Event] = []
        for obj in objects:
            track = self._tracks.get(obj.track_id)
            if track is None:
                track = self._tracks[obj.track_id] = _Track(obj.class_name)
            track.seen += 1
            track.last_frame, track.last_time, track.box = frame, time, obj.box
            point = anchor_point(obj.box, width, height, self.analytics.anchor)
            confirmed = track.seen >= self.min_track_age
            for line in self._lines.values():
                events.extend(self._line(line, track, obj, point, confirmed, time, frame))
            for zone in self._zones.values():
                events.extend(self._zone(zone, track, obj, point, confirmed, time, frame))
        events.extend(self._forget(frame))
        return events

    def _line(self, line: Line, track: _Track, obj: TrackedObject, point: Vec, confirmed: bool,
              time: float, frame: int) -> list[Event]:
        distance = signed_distance(line, point)
        if abs(distance) < self.analytics.margin:
            return []
        side = 1 if distance > 0 else -1
        state = track.lines.get(line.name)
        track.lines[line.name] = _LineState(side, point)
        if state is None or state.side == side or not crosses_segment(line, state.point, point):
            return []
        direction = Direction.IN if side > 0 else Direction.OUT
        if not confirmed or direction not in line.directions or not _counts(line.classes, track.class_name):
            return []
        self.line_counts[(line.name, direction, track.class_name)] += 1
        return [Event(self.stream, EventKind.LINE_CROSSED, line.name, track.class_name, obj.track_id, time, frame,
                      obj.box, direction=direction)]

    def _zone(self, zone: Zone, track: _Track, obj: TrackedObject, point: Vec, confirmed: bool,
              time: float, frame: int) -> list[Event]:
        polygon = self._polygons[zone.name]
        state = track.zones.get(zone.name)
        if state is None or distance_to_boundary(polygon, point) >= self.analytics.margin:
            inside = inside_polygon(polygon, point)
            if state is None:
                state = track.zones[zone.name] = _ZoneState(inside)
            state.inside = inside
        if not confirmed or not _counts(zone.classes, track.class_name):
            return []
        event = self._zone_event(zone, state, track, obj.track_id, time, frame)
        return [event] if event else []

    def _zone_event(self, zone: Zone, state: _ZoneState, track: _Track, track_id: int, time: float,
                    frame: int) -> Event | None:
        def event(kind: EventKind, dwell: float | None) -> Event:
            return Event(self.stream, kind, zone.name, track.class_name, track_id, time, frame, track.box,
                         dwell_seconds=dwell)

        if state.inside and not state.announced:
            state.announced, state.entered_at, state.dwell_sent = True, time, False
            return event(EventKind.ZONE_ENTERED, None)
        if not state.inside and state.announced:
            state.announced = False
            return event(EventKind.ZONE_EXITED, time - state.entered_at)
        if (state.announced and not state.dwell_sent and zone.dwell_seconds is not None
                and time - state.entered_at >= zone.dwell_seconds):
            state.dwell_sent = True
            return event(EventKind.ZONE_DWELL, time - state.entered_at)
        return None

    def _forget(self, frame: int) -> list[Event]:
        """Tracks the tracker has let go of leave their zones (an exit at the time they were last seen)."""
        events = []
        for track_id, track in list(self._tracks.items()):
            if frame - track.last_frame <= self.forget_after_frames:
                continue
            for name, state in track.zones.items():
                if state.announced:
                    events.append(Event(self.stream, EventKind.ZONE_EXITED, name, track.class_name, track_id,
                                        track.last_time, track.last_frame, track.box,
                                        dwell_seconds=track.last_time - state.entered_at))
            del self._tracks[track_id]
        return events


def _counts(classes: Sequence[str], class_name: str) -> bool:
    return not classes or class_name in classes
