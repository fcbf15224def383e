"""The VSSStream schema: what a stream may say, and what it is refused for, with the field and the reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from vss_api.vssstream import Direction, SamplingMode, Tracker, VSSStreamSpec


def spec(**overrides: Any) -> dict[str, Any]:
    return {"source": {"url": "rtsp://camera-7.cameras.svc:8554/live"}, "model": {"name": "detector"},
            **overrides}


def refused(document: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        VSSStreamSpec.model_validate(document)
    return str(caught.value)


def test_a_stream_needs_only_a_source_and_a_model_and_gets_live_bytetrack_defaults() -> None:
    stream = VSSStreamSpec.model_validate(spec())

    assert stream.sampling.mode is SamplingMode.LIVE and stream.sampling.fps == 5.0
    assert stream.tracking.tracker is Tracker.BYTETRACK and stream.tracking.min_track_age == 3
    assert stream.sinks.websocket and stream.preview.enabled
    assert stream.analytics.lines == [] and stream.analytics.zones == []


def test_credentials_in_the_url_are_refused_and_the_secret_reference_is_named() -> None:
    message = refused(spec(source={"url": "rtsp://admin:hunter2@camera-7:8554/live"}))

    assert "must not carry credentials" in message and "source.credentials" in message


def test_a_source_scheme_other_than_rtsp_http_or_file_is_refused() -> None:
    assert "url" in refused(spec(source={"url": "ftp://camera/clip.mp4"}))


def test_lines_read_from_and_to_and_count_both_directions_unless_told() -> None:
    stream = VSSStreamSpec.model_validate(spec(analytics={"lines": [
        {"name": "entrance", "from": [0.1, 0.5], "to": [0.9, 0.5]}]}))

    [line] = stream.analytics.lines
    assert (line.start[0], line.end[0]) == (0.1, 0.9)
    assert line.directions == [Direction.IN, Direction.OUT]


@pytest.mark.parametrize(("analytics", "reason"), [
    ({"lines": [{"name": "a", "from": [0.5, 0.5], "to": [0.5, 0.5]}]}, "same point"),
    ({"lines": [{"name": "a", "from": [1.5, 0.5], "to": [0.5, 0.5]}]}, "less than or equal to 1"),
    ({"zones": [{"name": "z", "polygon": [[0, 0], [1, 1]]}]}, "at least 3"),
    ({"lines": [{"name": "a", "from": [0, 0], "to": [1, 1]}],
      "zones": [{"name": "a", "polygon": [[0, 0], [1, 0], [1, 1]]}]}, "unique"),
])
def test_geometry_that_cannot_count_is_refused(analytics: dict[str, Any], reason: str) -> None:
    assert reason in refused(spec(analytics=analytics))


def test_an_mqtt_topic_with_wildcards_and_a_webhook_with_credentials_are_refused() -> None:
    assert "topic" in refused(spec(sinks={"mqtt": {"url": "mqtt://broker:1883", "topic": "vss/#"}}))
    assert "url" in refused(spec(sinks={"webhooks": [{"url": "https://user:pw@hooks.example/x"}]}))


def test_unknown_fields_are_refused() -> None:
    assert "extra" in refused(spec(sampling={"fps": 5, "framerate": 10}))
