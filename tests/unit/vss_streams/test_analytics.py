"""Line crossings and zone events from tracks: counted once per real crossing, in the right direction, only for
confirmed tracks, the same at any resolution, and kept across an edit of the lines and zones."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from vss_api.vssstream import Analytics, Direction
from vss_streams.analytics import Analyzer, Event, EventKind, TrackedObject, crosses_segment, inside_polygon

W, H = 1280, 720
# A horizontal line across the middle, drawn left to right: moving down the frame crosses it "in".
MIDDLE = {"name": "middle", "from": [0.0, 0.5], "to": [1.0, 0.5]}
DOOR = {"name": "door", "polygon": [[0.6, 0.6], [0.9, 0.6], [0.9, 0.9],
                                    [0.6, 0.9]], "dwellSeconds": 2.0}


def analyzer(lines: Iterable[dict[str, object]] = (MIDDLE,), zones: Iterable[dict[str, object]] = (),
             min_track_age: int = 3, **analytics: object) -> Analyzer:
    spec = Analytics.model_validate({"lines": list(lines), "zones": list(zones), **analytics})
    return Analyzer("cam-1", spec, min_track_age=min_track_age, forget_after_frames=10)


def box_at(x: float, y: float, width: int = W, height: int = H) -> tuple[float, float, float, float]:
    """A 40x80-pixel box (at 1280x720, scaled with the frame) standing with its feet at (x, y) in fractions."""
    w, h = 40 * width / W, 80 * height / H
    return (x * width - w / 2, y * height - h, x * width + w / 2, y * height)


def walk(a: Analyzer, path: Iterable[tuple[float, float]], track_id: int = 1, class_name: str = "person",
         width: int = W, height: int = H, fps: float = 10.0, start_frame: int = 0) -> list[Event]:
    events: list[Event] = []
    for i, (x, y) in enumerate(path):
        frame = start_frame + i
        events += a.update([TrackedObject(track_id, class_name, box_at(x, y, width, height))], width, height,
                           frame / fps, frame)
    return events


def downward(x: float = 0.5, frames: int = 20) -> list[tuple[float, float]]:
    return [(x, 0.2 + 0.6 * i / (frames - 1)) for i in range(frames)]


def test_a_person_walking_down_across_the_line_is_one_crossing_in() -> None:
    a = analyzer()

    [event] = walk(a, downward())

    assert (event.kind, event.name, event.direction, event.class_name, event.track_id) == (
        EventKind.LINE_CROSSED, "middle", Direction.IN, "person", 1)
    assert a.line_counts == {("middle", Direction.IN, "person"): 1}
    assert event.to_json()["line"] == "middle" and event.to_json()["direction"] == "in"


def test_walking_back_up_is_a_crossing_out() -> None:
    a = analyzer()

    events = walk(a, downward() + downward()[::-1])

    assert [e.direction for e in events] == [Direction.IN, Direction.OUT]


def test_standing_on_the_line_and_jittering_within_the_margin_counts_once() -> None:
    a = analyzer(margin=0.02)
    jitter = [(0.5, 0.5 + (0.015 if i % 2 else -0.015)) for i in range(50)]

    events = walk(a, downward()[:8] + jitter + downward()[12:])

    assert [e.direction for e in events] == [Direction.IN]


def test_a_path_past_the_end_of_the_segment_is_not_a_crossing() -> None:
    half = {"name": "left-half", "from": [0.0, 0.5], "to": [0.4, 0.5]}
    a = analyzer(lines=[half])

    assert walk(a, downward(x=0.7)) == []
    assert len(walk(a, downward(x=0.2), track_id=2)) == 1


def test_a_track_younger_than_min_track_age_never_counts() -> None:
    a = analyzer(min_track_age=5)
    born_on_the_line = [(0.5, 0.46), (0.5, 0.48), (0.5, 0.53), (0.5, 0.56)]  # crosses at its third frame

    assert walk(a, born_on_the_line) == []
    assert a.line_counts == {}


def test_only_the_directions_and_classes_a_line_names_are_counted() -> None:
    a = analyzer(lines=[{**MIDDLE, "directions": ["out"], "classes": ["car"]}])

    assert walk(a, downward(), track_id=1, class_name="car") == []  # in: not counted
    assert walk(a, downward()[::-1], track_id=2, class_name="person") == []  # not a car
    [event] = walk(a, downward()[::-1], track_id=3, class_name="car")
    assert event.direction is Direction.OUT


def test_counts_are_the_same_at_any_resolution() -> None:
    counts = []
    for width, height in ((640, 360), (1280, 720), (1920, 1080)):
        a = analyzer()
        walk(a, downward() + downward()[::-1] + downward(), width=width, height=height)
        counts.append(a.line_counts)

    assert counts[0] == counts[1] == counts[2] == {("middle", Direction.IN, "person"): 2,
                                                   ("middle", Direction.OUT, "person"): 1}


def test_a_zone_visit_is_one_enter_one_dwell_and_one_exit_with_its_duration() -> None:
    a = analyzer(lines=[], zones=[DOOR])
    outside, inside = (0.3, 0.75), (0.75, 0.75)

    events = walk(a, [outside] * 5 + [inside] * 40 + [outside] * 5)  # 4 s inside at 10 fps

    assert [e.kind for e in events] == [EventKind.ZONE_ENTERED, EventKind.ZONE_DWELL, EventKind.ZONE_EXITED]
    assert events[1].dwell_seconds is not None and events[1].dwell_seconds >= 2.0
    assert events[2].dwell_seconds == 4.0
    assert a.occupancy() == {}


def test_a_track_born_inside_a_zone_enters_it_once_it_is_confirmed() -> None:
    a = analyzer(lines=[], zones=[DOOR], min_track_age=3)

    events = walk(a, [(0.75, 0.75)] * 5)

    assert [(e.kind, e.frame) for e in events] == [(EventKind.ZONE_ENTERED, 2)]
    assert a.occupancy() == {("door", "person"): 1}


def test_a_track_the_tracker_lets_go_of_leaves_its_zone_when_it_was_last_seen() -> None:
    a = analyzer(lines=[], zones=[DOOR])
    walk(a, [(0.75, 0.75)] * 5)

    events: list[Event] = []
    for frame in range(5, 30):  # only another track from now on
        events += a.update([TrackedObject(2, "person", box_at(0.1, 0.1))], W, H, frame / 10, frame)

    [exit_event] = [e for e in events if e.track_id == 1]
    assert (exit_event.kind, exit_event.frame) == (EventKind.ZONE_EXITED, 4)
    assert a.occupancy() == {}


def test_editing_zones_keeps_the_state_of_an_unchanged_line() -> None:
    a = analyzer(zones=[DOOR])
    walk(a, downward()[:8])  # above the line, confirmed

    a.reconfigure(Analytics.model_validate({"lines": [MIDDLE], "zones": []}))
    events = walk(a, downward()[8:], start_frame=8)

    assert [e.direction for e in events] == [Direction.IN]


def test_a_moved_line_starts_afresh_and_does_not_count_the_old_side() -> None:
    a = analyzer()
    walk(a, downward()[:8])
    moved = {**MIDDLE, "from": [0.0, 0.45], "to": [1.0, 0.45]}

    a.reconfigure(Analytics.model_validate({"lines": [moved]}))
    events = walk(a, [(0.5, 0.6)] * 3, start_frame=8)  # first seen below the moved line: no crossing seen

    assert events == []


def test_segment_and_polygon_geometry() -> None:
    line = Analytics.model_validate({"lines": [MIDDLE]}).lines[0]
    square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]

    assert crosses_segment(line, (0.5, 0.4), (0.5, 0.6))
    assert not crosses_segment(line, (0.5, 0.4), (0.5, 0.45))
    assert not crosses_segment(line, (0.5, 0.4), (0.9, 0.4))  # parallel
    assert inside_polygon(square, (0.5, 0.5)) and not inside_polygon(square, (1.5, 0.5))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.05, 0.95).filter(lambda y: abs(abs(y - 0.5) - 0.01) > 1e-6), min_size=2, max_size=60))
def test_ins_minus_outs_is_the_net_change_of_side_whatever_the_path(ys: list[float]) -> None:
    """A line across the whole frame: every crossing of it is real, so in - out is where the walk ended
    relative to where it began (sides counted only beyond the margin)."""
    a = analyzer(min_track_age=1, margin=0.01)
    walk(a, [(0.5, y) for y in ys])

    sides = [1 if y > 0.5 else -1 for y in ys if abs(y - 0.5) >= 0.01]
    ins = a.line_counts[("middle", Direction.IN, "person")]
    outs = a.line_counts[("middle", Direction.OUT, "person")]
    assert ins - outs == ((sides[-1] - sides[0]) // 2 if sides else 0)
    assert ins + outs == sum(1 for p, q in itertools.pairwise(sides) if p != q)
