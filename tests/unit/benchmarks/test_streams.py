"""The streams benchmark's lag behind the camera: frames are placed on their stream's clock by the frame that
arrived soonest, so time a frame waited in the buffers counts and a steady stream's lag is its processing."""

from __future__ import annotations

import pytest

from benchmarks.streams import StreamRun


def test_a_stream_that_keeps_up_lags_by_its_processing_time_only() -> None:
    # frames 1/15 s apart, each decoded on time at t0 + pts and out 40 ms later
    run = StreamRun(frames=[(i / 15, 100.0 + i / 15, 100.04 + i / 15) for i in range(30)])

    assert run.offset() == pytest.approx(100.0)
    assert run.camera_lags(since=0.0) == pytest.approx([0.04] * 30)


def test_frames_that_arrive_later_and_later_lag_by_what_they_waited() -> None:
    # decoding falls behind real time: frame i arrives i * 10 ms late
    run = StreamRun(frames=[(i / 15, 100.0 + i / 15 + i * 0.01, 100.02 + i / 15 + i * 0.01) for i in range(10)])

    lags = run.camera_lags(since=0.0)

    assert lags[0] == pytest.approx(0.02) and lags[-1] == pytest.approx(0.02 + 9 * 0.01)


def test_frames_decoded_before_the_warm_up_ended_are_left_out() -> None:
    run = StreamRun(frames=[(i / 15, 100.0 + i / 15, 100.05 + i / 15) for i in range(30)])

    assert len(run.camera_lags(since=101.0)) == 15
