"""The status a worker writes into its VSSStream, from what its source and model are doing."""

from __future__ import annotations

from typing import Any

from vss_api.vssstream import VSSStreamSpec
from vss_streams.source import SourceState
from vss_streams.status_report import STALLED_AFTER_S, RateWindow, Reading, rfc3339, stream_status

SPEC = VSSStreamSpec.model_validate({"source": {"url": "rtsp://camera:8554/live"}, "model": {"name": "detector"},
                                     "sampling": {"fps": 10, "maxLagSeconds": 1.0}})
NOW = 1_800_000_000.0


def status(state: SourceState, *, fps: float | None = 10.0, lag: float | None = 0.2, unanswered: bool = False,
           previous: dict[str, dict[str, Any]] | None = None, now: float = NOW) -> dict[str, Any]:
    return stream_status(SPEC, Reading(state, 100, 0, lag, now), fps, unanswered, previous or {})


def conditions(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in doc["conditions"]}


def test_a_connected_stream_on_time_is_ready_with_its_fps_lag_and_resolution() -> None:
    doc = status(SourceState(connected=True, since=NOW - 5, resolution=(1280, 720)))

    assert conditions(doc) == {"Ready": ("True", "Streaming"), "Stalled": ("False", "Streaming"),
                               "Reconciling": ("False", "Streaming")}
    assert doc["fps"] == 10.0 and doc["lagSeconds"] == 0.2
    assert doc["source"] == {"connected": True, "since": rfc3339(NOW - 5), "lastError": "", "reconnects": 0,
                             "resolution": "1280x720"}


def test_a_lost_source_is_reconciling_with_the_reason_then_stalled_once_it_stays_down() -> None:
    lost = SourceState(connected=False, since=NOW - 3, last_error="Connection refused", reconnects=2)
    early = status(lost)
    late = status(lost, now=NOW - 3 + STALLED_AFTER_S + 1)

    assert conditions(early)["Ready"] == ("False", "SourceUnavailable")
    assert conditions(early)["Reconciling"][0] == "True" and conditions(early)["Stalled"][0] == "False"
    assert "Connection refused" in early["conditions"][0]["message"] and rfc3339(NOW - 3) in early["conditions"][0][
        "message"]
    assert conditions(late)["Stalled"] == ("True", "SourceUnavailable")
    assert conditions(late)["Reconciling"][0] == "False"
    assert late["source"]["reconnects"] == 2


def test_a_model_that_does_not_answer_and_a_stream_behind_live_are_not_ready() -> None:
    connected = SourceState(connected=True, since=NOW - 60)

    assert conditions(status(connected, fps=0.0, unanswered=True))["Ready"] == ("False", "ModelUnavailable")
    assert conditions(status(connected, fps=0.0, unanswered=True))["Stalled"][0] == "True"
    assert conditions(status(connected, lag=2.5))["Ready"] == ("False", "Lagging")


def test_an_ended_recording_is_neither_ready_nor_stalled_nor_in_progress() -> None:
    doc = status(SourceState(connected=False, since=NOW - 1, ended=True))

    assert conditions(doc) == {"Ready": ("False", "SourceEnded"), "Stalled": ("False", "SourceEnded"),
                               "Reconciling": ("False", "SourceEnded")}


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    state = SourceState(connected=True, since=NOW - 5)
    first = status(state, now=NOW)
    again = status(state, now=NOW + 30, previous={c["type"]: c for c in first["conditions"]})
    lost = status(SourceState(connected=False, since=NOW + 60), now=NOW + 60,
                  previous={c["type"]: c for c in again["conditions"]})

    assert again["conditions"][0]["lastTransitionTime"] == rfc3339(NOW)
    assert lost["conditions"][0]["lastTransitionTime"] == rfc3339(NOW + 60)


def test_the_fps_window_forgets_samples_older_than_the_window() -> None:
    window = RateWindow(window_s=10)

    assert window.add(0, 0) is None
    assert window.add(5, 50) == 10.0
    window.add(10, 100)
    assert window.add(20, 100) == 0.0  # nothing in the last 10 s
