"""Frames from a source: sampled to the stream's rate from the frames' own times, `live` keeping only the newest
frame (the older one dropped and counted), `exhaustive` keeping every one, and a source that cannot be opened
retried with capped backoff, its reason in the state without the credentials."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vss_api.vssstream import Sampling, SamplingMode, Source
from vss_models.clips import ClipSpec, write_clip
from vss_streams.source import Decoder, Frame, FrameSlot, SampleClock, SourceState, open_options


def frame(index: int) -> Frame:
    return Frame(index, index / 10, np.zeros((2, 2, 3), np.uint8), 0.0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 320x240 at 15 fps, nothing moving."""
    return write_clip(ClipSpec(width=320, height=240, fps=15, frames=45),
                      tmp_path_factory.mktemp("clip") / "still.mp4")


async def _drain(slot: FrameSlot) -> list[Frame]:
    out = []
    while (f := await slot.get()) is not None:
        out.append(f)
    return out


def test_live_keeps_the_newest_frame_and_counts_the_ones_it_drops() -> None:
    async def run() -> list[Frame]:
        state = SourceState()
        slot = FrameSlot(SamplingMode.LIVE, asyncio.get_running_loop(), state)
        stop = threading.Event()
        for i in range(5):
            slot.put(frame(i), stop)
        slot.put(None, stop)
        frames = await _drain(slot)
        assert state.frames_dropped == 4
        return frames

    assert [f.index for f in asyncio.run(run())] == [4]


def test_exhaustive_hands_over_every_frame_in_order_and_makes_the_decoder_wait() -> None:
    async def run() -> list[Frame]:
        state = SourceState()
        slot = FrameSlot(SamplingMode.EXHAUSTIVE, asyncio.get_running_loop(), state, capacity=2)
        stop = threading.Event()
        producer = threading.Thread(target=lambda: [slot.put(frame(i), stop) for i in range(20)] + [
            slot.put(None, stop)])
        producer.start()
        frames = await _drain(slot)
        producer.join(5)
        assert state.frames_dropped == 0
        return frames

    assert [f.index for f in asyncio.run(run())] == list(range(20))


@pytest.mark.parametrize(("fps", "expected"), [(15.0, 45), (5.0, 15), (1.0, 3)])
def test_a_file_is_sampled_to_the_streams_rate_from_its_frame_times(clip: Path, fps: float, expected: int) -> None:
    async def run() -> tuple[list[Frame], SourceState]:
        state = SourceState()
        slot = FrameSlot(SamplingMode.EXHAUSTIVE, asyncio.get_running_loop(), state)
        decoder = Decoder(Source(url=f"file://{clip}"), Sampling(fps=fps, mode=SamplingMode.EXHAUSTIVE), slot, state)
        decoder.start()
        frames = await asyncio.wait_for(_drain(slot), 60)
        decoder.stop()
        return frames, state

    frames, state = asyncio.run(run())

    assert len(frames) == expected and state.frames_decoded == 45 and state.ended
    assert frames[0].pixels.shape == (240, 320, 3)
    steps = np.diff([f.time for f in frames])
    assert np.allclose(steps, 1 / fps, atol=1e-3)


def test_a_source_that_never_opens_is_retried_with_capped_backoff_and_says_why_without_credentials() -> None:
    delays: list[float] = []
    attempts = threading.Event()

    def sleep(delay: float) -> bool:
        delays.append(delay)
        if len(delays) >= 6:
            attempts.set()
            return True  # stop, as stop() would
        return False

    async def run() -> SourceState:
        state = SourceState()
        slot = FrameSlot(SamplingMode.LIVE, asyncio.get_running_loop(), state)
        source = Source(url="rtsp://127.0.0.1:9/nothing-listens-here")
        decoder = Decoder(source, Sampling(), slot, state, credentials=("admin", "hunter2"),
                          backoff=(0.5, 2.0), sleep=sleep)
        decoder.start()
        assert await asyncio.wait_for(_drain(slot), 60) == []
        decoder.stop()
        return state

    state = asyncio.run(run())

    assert attempts.is_set()
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert not state.connected and state.reconnects == 5 and state.last_error
    assert "hunter2" not in state.last_error and "admin" not in state.last_error


def test_credentials_go_into_the_url_ffmpeg_opens_and_rtsp_gets_its_transport_and_timeout() -> None:
    url, options = open_options(Source(url="rtsp://camera:8554/live", transport="udp"), "admin", "s3cret")

    assert url == "rtsp://admin:s3cret@camera:8554/live"
    assert options["rtsp_transport"] == "udp" and options["timeout"] == "5000000"
    assert open_options(Source(url="file:///clips/a.mp4"))[0] == "/clips/a.mp4"


def test_a_missing_recording_ends_the_stream_with_its_reason_instead_of_being_retried(tmp_path: Path) -> None:
    delays: list[float] = []

    def sleep(delay: float) -> bool:
        delays.append(delay)
        return False

    async def run() -> SourceState:
        state = SourceState()
        slot = FrameSlot(SamplingMode.EXHAUSTIVE, asyncio.get_running_loop(), state)
        decoder = Decoder(Source(url=f"file://{tmp_path}/none.mp4"), Sampling(), slot, state, sleep=sleep)
        decoder.start()
        assert await asyncio.wait_for(_drain(slot), 30) == []
        decoder.stop()
        return state

    state = asyncio.run(run())

    assert state.ended and not state.connected and state.reconnects == 0 and delays == []
    assert "FileNotFoundError" in state.last_error


def test_frame_times_go_on_across_a_reconnect_and_a_source_clock_that_goes_back() -> None:
    clock = SampleClock(5.0)
    first = [clock.sample(i / 15) for i in range(15)]  # 1 s at 15 fps, sampled to 5 fps
    kept = [t for t in first if t is not None]
    clock.reconnected()  # the camera came back and starts its clock at 100 s
    after_reconnect = [t for t in (clock.sample(100 + i / 15) for i in range(15)) if t is not None]
    after_jump = [t for t in (clock.sample(3 + i / 15) for i in range(15)) if t is not None]  # 100 s -> 3 s

    assert np.allclose(kept, [0.0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    assert np.allclose(after_reconnect, [1.0, 1.2, 1.4, 1.6, 1.8], atol=1e-6)
    assert np.allclose(after_jump, [2.0, 2.2, 2.4, 2.6, 2.8], atol=1e-6)


def test_the_state_says_since_when_and_at_what_resolution_as_the_streams_status_does() -> None:
    state = SourceState(connected=False, since=0.0, last_error="ConnectionRefusedError: Connection refused",
                        reconnects=3, resolution=(640, 360))

    status = state.to_status()

    assert status.since == "1970-01-01T00:00:00Z" and status.resolution == "640x360"
    assert status.model_dump(by_alias=True) == {
        "connected": False, "since": "1970-01-01T00:00:00Z", "lastError": "ConnectionRefusedError: Connection refused",
        "reconnects": 3, "resolution": "640x360"}
    assert SourceState().to_status().resolution is None
    assert abs(SourceState().since - time.time()) < 5


def test_a_camera_that_accepts_the_connection_and_never_answers_is_a_timeout_not_a_decoder_blocked_for_good() -> None:
    """A real loopback socket that listens and never accepts: the kernel completes the TCP handshake, no RTSP
    reply ever comes. FFmpeg's socket timeout ends the attempt, and the state says it timed out."""
    stopped = threading.Event()

    def sleep(_delay: float) -> bool:
        stopped.set()
        return True  # one attempt is enough

    async def run(port: int) -> tuple[SourceState, float]:
        state = SourceState()
        slot = FrameSlot(SamplingMode.LIVE, asyncio.get_running_loop(), state)
        decoder = Decoder(Source(url=f"rtsp://127.0.0.1:{port}/cam"), Sampling(), slot, state, sleep=sleep)
        started = time.monotonic()
        decoder.start()
        assert await asyncio.wait_for(_drain(slot), 30) == []
        decoder.stop()
        return state, time.monotonic() - started

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        state, took = asyncio.run(run(hung.getsockname()[1]))

    assert stopped.is_set() and not state.connected
    assert state.last_error.startswith("timed out"), state.last_error
    assert 4.0 <= took < 20.0
