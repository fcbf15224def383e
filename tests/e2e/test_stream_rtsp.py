"""A `live` VSSStream worker against a real RTSP server that fails: GStreamer's gst-rtsp-server on loopback
(tests/support/rtsp_server.py, a real process serving generated H.264 clips over RTSP/TCP, SIGKILLed and
restarted on the same port), frames inferred by the shipped detector served by a real
`vss run examples/detection.yaml` over v2 gRPC, as in test_stream_counts.py. Nothing is mocked: the faults are a
killed server, a server that comes back at another resolution, a port nobody listens on, a predictor that is
not there. Every wait polls with a deadline."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.serving import REPO, Served, free_port
from tests.support.rtsp_server import RtspServer
from vss_api.vssstream import VSSStreamSpec
from vss_models.clips import crossing_clip, write_clip
from vss_streams.analytics import Event, EventKind, TrackedObject
from vss_streams.inference import DetectionClient
from vss_streams.source import Frame
from vss_streams.worker import StreamReport, StreamWorker

FPS = 5.0  # sampled: the detector on a loaded CPU keeps up, and tracks still see each walk ~20 times
CLIP_FRAMES = 150  # 10 s at 15 fps, looped by the server: every round has crossings from its first seconds
TIMELINE = REPO / "build" / "reports" / "rtsp-reconnect-timeline.txt"


@pytest.fixture(scope="module")
def clip_720p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(crossing_clip(frames=CLIP_FRAMES), tmp_path_factory.mktemp("clips") / "crossing-720p.mp4")


@pytest.fixture(scope="module")
def clip_360p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(crossing_clip(frames=CLIP_FRAMES, width=640, height=360),
                      tmp_path_factory.mktemp("clips") / "crossing-360p.mp4")


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[RtspServer]:
    with RtspServer(tmp_path / "rtsp", path="cam") as server:
        yield server


def live_spec(url: str) -> VSSStreamSpec:
    return VSSStreamSpec.model_validate({
        "source": {"url": url, "transport": "tcp"}, "model": {"name": "detector"},
        "sampling": {"fps": FPS, "mode": "live"},
        "analytics": {"lines": [{"name": "road", "from": [0.0, 0.55], "to": [1.0, 0.55]}]}})


async def until(condition: Callable[[], object], what: str, deadline_s: float,
                task: asyncio.Task[StreamReport] | None = None, server: RtspServer | None = None) -> None:
    """Polls `condition` on the event loop (the worker runs between polls) until it holds; fails after the
    deadline, or at once if the worker's task ended (with its exception) or the RTSP server that should be up
    exited (with its log: a failure of the test's camera is not the worker's)."""
    end = time.monotonic() + deadline_s
    while not condition():
        if task is not None and task.done():
            raise AssertionError(f"the worker ended while waiting for: {what}: {task.exception()!r}")
        if server is not None and not server.running:
            raise AssertionError(f"the RTSP server exited while waiting for: {what}: {server.output()[-3000:]}")
        if time.monotonic() > end:
            log = f"; the RTSP server's log: {server.output()[-3000:]}" if server is not None else ""
            raise AssertionError(f"not within {deadline_s}s: {what}{log}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Seen:
    """One inferred frame, as the worker's frame listener saw it."""

    at: float  # time.monotonic()
    time: float
    shape: tuple[int, ...]
    tracked: list[TrackedObject]
    events: list[Event]


@dataclass(frozen=True)
class Sample:
    """The source's state at one moment, from the status timeline."""

    offset: float
    connected: bool
    last_error: str
    since: float
    reconnects: int
    resolution: tuple[int, int] | None
    inferred: int  # frames inferred so far (not a reason to record a sample by itself)

    def line(self) -> str:
        size = f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else "-"
        return (f"{self.offset:7.2f}s  connected={self.connected!s:<5}  reconnects={self.reconnects:<2}  "
                f"resolution={size:<9}  inferred={self.inferred:<4}  since={self.since:.2f}  "
                f"last_error={self.last_error or '-'}")


class Running:
    """A StreamWorker running on this loop, what it inferred, and its state sampled every 0.1 s (kept only
    when it changed)."""

    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker
        self.seen: list[Seen] = []
        self.timeline: list[Sample] = []
        self.started = time.monotonic()
        worker.frame_listeners.append(self._saw)
        self.task: asyncio.Task[StreamReport] = asyncio.create_task(worker.run())
        self._sampler = asyncio.create_task(self._sample())

    def _saw(self, frame: Frame, tracked: list[TrackedObject], events: list[Event]) -> None:
        self.seen.append(Seen(time.monotonic(), frame.time, frame.pixels.shape, tracked, events))

    async def _sample(self) -> None:
        while True:
            self.record()
            await asyncio.sleep(0.1)

    def record(self) -> None:
        s = self.worker.state
        sample = Sample(time.monotonic() - self.started, s.connected, s.last_error, s.since, s.reconnects,
                        s.resolution, len(self.seen))
        last = self.timeline[-1] if self.timeline else None
        if last is None or (last.connected, last.last_error, last.reconnects, last.resolution, last.since) != (
                sample.connected, sample.last_error, sample.reconnects, sample.resolution, sample.since):
            self.timeline.append(sample)

    @property
    def events(self) -> list[Event]:
        return [e for s in self.seen for e in s.events]

    def crossings(self) -> list[Event]:
        return [e for e in self.events if e.kind is EventKind.LINE_CROSSED]

    def metric(self, name: str, **labels: str) -> float:
        value = self.worker.registry.get_sample_value(name, {"stream": self.worker.name, **labels})
        return value or 0.0

    async def stop(self, deadline_s: float = 15.0) -> None:
        """`StreamWorker.stop()`; `run()` must return (not raise) within the deadline."""
        self.worker.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), deadline_s)
        finally:
            self._sampler.cancel()
            self.record()
        assert self.task.exception() is None


@asynccontextmanager
async def running(worker: StreamWorker, client: DetectionClient) -> AsyncIterator[Running]:
    run = Running(worker)
    try:
        yield run
    finally:
        if not run.task.done():
            worker.stop()
            try:
                await asyncio.wait_for(asyncio.shield(run.task), 15)
            except TimeoutError:
                run.task.cancel()
        run._sampler.cancel()
        await client.close()


def test_a_killed_rtsp_server_that_comes_back_is_reconnected_to_and_counting_goes_on(
        shipped_detector: Served, clip_720p: Path, rtsp: RtspServer) -> None:
    """The RTSP server is SIGKILLed mid-stream (no TEARDOWN, its TCP connection dies) and restarted on the same
    port 2 retries later: the worker says not connected with the reason and since when during the gap, reopens
    it (reconnects grow), infers frames again and counts new crossings, and never crashes."""
    rtsp.start(clip_720p, loop=True)

    async def scenario() -> tuple[Running, dict[str, float]]:
        client = DetectionClient(shipped_detector.grpc_url, "detector", timeout_s=30.0)
        async with running(StreamWorker("gate", live_spec(rtsp.url), client), client) as run:
            state = run.worker.state
            await until(lambda: state.connected and len(run.seen) >= 10 and run.crossings(),
                        "10 frames inferred and a crossing counted from the first server", 45, run.task, rtsp)
            before = {"inferred": len(run.seen), "crossings": len(run.crossings()), "reconnects": state.reconnects,
                      "killed_at": time.monotonic() - run.started}
            rtsp.kill()
            await until(lambda: not state.connected and state.last_error, "the state says it lost the source", 20,
                        run.task)
            lost_since = state.since
            await until(lambda: state.reconnects >= before["reconnects"] + 2,
                        "two reopenings refused while the server is down", 20, run.task)
            assert not state.connected and state.since == lost_since  # since: when it was lost, not each retry
            inferred_in_gap = len(run.seen)
            rtsp.restart(clip_720p, loop=True)
            before["restarted_at"] = time.monotonic() - run.started
            await until(lambda: state.connected and len(run.seen) >= inferred_in_gap + 10
                        and len(run.crossings()) > before["crossings"],
                        "connected again, 10 more frames inferred and a new crossing", 45, run.task, rtsp)
            await run.stop()
            return run, before

    run, before = asyncio.run(asyncio.wait_for(scenario(), 150))

    report = "\n".join([f"RTSP reconnect timeline ({rtsp.url}; SIGKILL at {before['killed_at']:.2f}s, "
                        f"restart at {before['restarted_at']:.2f}s)", *(s.line() for s in run.timeline)])
    print("\n" + report)
    TIMELINE.parent.mkdir(parents=True, exist_ok=True)
    TIMELINE.write_text(report + "\n")

    gap = [s for s in run.timeline if before["killed_at"] <= s.offset < before["restarted_at"]]
    assert gap and all(not s.connected and s.last_error for s in gap)
    assert any(s.connected for s in run.timeline if s.offset >= before["restarted_at"])
    assert run.worker.state.reconnects >= before["reconnects"] + 3  # two refused, one that took
    assert run.metric("vss_stream_reconnects_total") == run.worker.state.reconnects
    after = [s for s in run.seen if s.at - run.started > before["restarted_at"]]
    assert len(after) >= 10 and all(s.shape == (720, 1280, 3) for s in after)
    times = [s.time for s in run.seen]
    assert all(b > a for a, b in itertools.pairwise(times))  # frame times go on across the gap
    assert [e for s in after for e in s.events if e.kind is EventKind.LINE_CROSSED]  # counting went on


def test_a_hung_rtsp_server_is_noticed_by_the_read_timeout_and_reconnected_to_once_it_answers_again(
        shipped_detector: Served, clip_720p: Path, rtsp: RtspServer) -> None:
    """The real RTSP server is SIGSTOPped mid-stream: its TCP connection stays open and silent, and the kernel
    still accepts new connections that nobody answers. The decoder is not stuck for good: a read times out (FFmpeg's
    socket timeout or PyAV's read timeout), the state says not connected and why, reopening times out too while
    the server is hung, and once it is SIGCONTed the worker is connected again and infers frames."""
    rtsp.start(clip_720p, loop=True)

    async def scenario() -> tuple[Running, float]:
        client = DetectionClient(shipped_detector.grpc_url, "detector", timeout_s=30.0)
        async with running(StreamWorker("gate", live_spec(rtsp.url), client), client) as run:
            state = run.worker.state
            await until(lambda: state.connected and len(run.seen) >= 5, "5 frames inferred", 45, run.task)
            reconnects = state.reconnects
            rtsp.freeze()
            frozen_at = time.monotonic()
            try:
                await until(lambda: not state.connected and "timed out" in state.last_error.lower(),
                            "the state says a read timed out", 25, run.task)
                noticed_after = time.monotonic() - frozen_at
                # the first reopening is accepted by the kernel and never answered: only once it timed out (and
                # the state still says so) does the second one start
                await until(lambda: state.reconnects >= reconnects + 2, "a reopening that timed out too", 40,
                            run.task)
                assert not state.connected and "timed out" in state.last_error.lower(), state.last_error
                inferred = len(run.seen)
            finally:
                rtsp.thaw()
            await until(lambda: state.connected and len(run.seen) >= inferred + 5,
                        "connected again after the thaw and 5 more frames inferred", 90, run.task)
            await run.stop()
            return run, noticed_after

    run, noticed_after = asyncio.run(asyncio.wait_for(scenario(), 150))

    print(f"\nhung server noticed after {noticed_after:.1f}s; timeline:\n" + "\n".join(s.line() for s in run.timeline))
    assert noticed_after < 20.0  # FFmpeg's 5 s socket timeout, PyAV's 8 s read timeout: not never
    assert any(not s.connected and "timed out" in s.last_error.lower() for s in run.timeline)
    assert run.worker.state.connected or run.timeline[-1].connected


def test_a_source_back_at_another_resolution_is_inferred_in_its_new_pixels(
        shipped_detector: Served, clip_720p: Path, clip_360p: Path, rtsp: RtspServer) -> None:
    """The real RTSP server serves 1280x720, is SIGKILLed and comes back on the same port with a 640x360 clip: the
    worker infers 640x360 frames, says so in its state, and the boxes of what it tracks and emits lie in the new
    frame's pixels; nothing crashes."""
    rtsp.start(clip_720p, loop=True)

    async def scenario() -> Running:
        client = DetectionClient(shipped_detector.grpc_url, "detector", timeout_s=30.0)
        async with running(StreamWorker("gate", live_spec(rtsp.url), client), client) as run:
            state = run.worker.state
            await until(lambda: len(run.seen) >= 5 and state.resolution == (1280, 720), "5 frames at 1280x720", 45,
                        run.task)
            rtsp.kill()
            await until(lambda: not state.connected, "the state says it lost the source", 20, run.task)
            rtsp.restart(clip_360p, loop=True)

            def small_with_events() -> bool:
                small = [s for s in run.seen if s.shape[:2] == (360, 640)]
                return len(small) >= 10 and any(s.events for s in small)

            await until(small_with_events, "10 frames at 640x360 and an event on one of them", 45, run.task)
            assert state.connected and state.resolution == (640, 360)
            assert state.to_status().resolution == "640x360"
            await run.stop()
            return run

    run = asyncio.run(asyncio.wait_for(scenario(), 150))

    small = [s for s in run.seen if s.shape[:2] == (360, 640)]
    assert small and all(s.shape[:2] == (360, 640) for s in run.seen[run.seen.index(small[0]):])

    def inside(box: tuple[float, float, float, float]) -> bool:
        return -1.0 <= box[0] < box[2] <= 641.0 and -1.0 <= box[1] < box[3] <= 361.0

    boxes = [o.box for s in small for o in s.tracked]
    events = [e for s in small for e in s.events]
    assert boxes and all(inside(b) for b in boxes)
    assert events and all(inside(e.box) for e in events)
    # a 640x360 box is not a 1280x720 one: objects are about half the height they were
    big = [o.box[3] - o.box[1] for s in run.seen if s.shape[:2] == (720, 1280) for o in s.tracked]
    if big:
        assert max(b[3] - b[1] for b in boxes) < max(big)


def test_a_source_that_never_answers_says_why_and_keeps_retrying_with_capped_backoff_until_stopped() -> None:
    """rtsp:// on a loopback port nobody listens on (a real refused TCP connection; no model is needed, none is
    called): within a deadline the state
    says not connected and why, it retries with backoff that doubles up to its 10 s cap (reconnects grow, since
    stays when it was first lost), the worker never crashes and `stop()` ends it cleanly."""
    url = f"rtsp://127.0.0.1:{free_port()}/cam"

    async def scenario() -> tuple[Running, list[float], float]:
        client = DetectionClient(f"127.0.0.1:{free_port()}", "detector")  # never called: no frame comes
        async with running(StreamWorker("gate", live_spec(url), client), client) as run:
            state = run.worker.state
            await until(lambda: not state.connected and "refused" in state.last_error.lower(),
                        "not connected, with the refusal as the reason", 15, run.task)
            first_since = state.since
            increments: list[float] = []

            def grown() -> bool:
                if state.reconnects > len(increments):
                    increments.extend([time.monotonic()] * (state.reconnects - len(increments)))
                return state.reconnects >= 7

            # delays 0.5, 1, 2, 4, 8, 10, 10: the 7th reopening ~36 s in
            await until(grown, "7 reopenings", 55, run.task)
            assert state.since == first_since and not run.task.done()
            stop_started = time.monotonic()
            await run.stop()
            return run, increments, time.monotonic() - stop_started

    run, increments, stop_took = asyncio.run(asyncio.wait_for(scenario(), 90))

    gaps = [b - a for a, b in itertools.pairwise(increments)]
    assert len(gaps) >= 5 and all(g <= 10.0 + 3.0 for g in gaps), gaps  # capped at 10 s (+ a loaded machine)
    assert gaps[-1] >= 8.0 and gaps[-1] < 1.5 * gaps[-2], gaps  # at the cap: it stopped doubling
    assert gaps[0] < gaps[-1]  # it did grow
    assert run.worker.state.ended and not run.worker.state.connected
    assert run.worker.report.frames_inferred == 0 and run.seen == []
    assert stop_took < 5.0  # the decoder was sleeping between retries: stop() ends it at once


@contextmanager
def predictor_down(how: str) -> Iterator[str]:
    """A gRPC target where no predictor answers: `refused`, a loopback port nobody listens on (each call fails at
    once); `hung`, a socket that listens but never accepts (each call waits out its deadline)."""
    if how == "refused":
        yield f"127.0.0.1:{free_port()}"
        return
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        yield f"127.0.0.1:{hung.getsockname()[1]}"


@pytest.mark.parametrize("how", ["refused", "hung"])
def test_a_predictor_that_is_down_drops_frames_as_unanswered_and_queues_nothing(
        clip_720p: Path, rtsp: RtspServer, how: str) -> None:
    """The detector's gRPC endpoint refuses connections, or accepts them and never answers, while the real RTSP
    server streams: every frame the worker takes is counted unanswered (report.frames_dropped_model and
    vss_stream_frames_total{stage="unanswered"}), none is inferred, and nothing piles up: in `live` the slot
    keeps only the newest frame, the older ones are dropped and counted, so at most one frame waits and one is
    in hand however long the model is away."""
    rtsp.start(clip_720p, loop=True)

    async def scenario(target: str) -> tuple[Running, list[int]]:
        client = DetectionClient(target, "detector", timeout_s=1.0)
        async with running(StreamWorker("gate", live_spec(rtsp.url), client), client) as run:
            state, report = run.worker.state, run.worker.report
            backlog: list[int] = []

            def enough() -> bool:
                taken = report.frames_dropped_model + report.frames_inferred
                backlog.append(state.frames_sampled - state.frames_dropped - taken)
                return report.frames_dropped_model >= 10 and state.frames_sampled >= 25

            await until(enough, "10 frames unanswered, 25 sampled", 45, run.task)
            await run.stop()
            return run, backlog

    with predictor_down(how) as target:
        run, backlog = asyncio.run(asyncio.wait_for(scenario(target), 90))

    report, state = run.worker.report, run.worker.state
    assert report.frames_inferred == 0 and run.seen == []
    assert report.frames_dropped_model >= 10
    assert run.metric("vss_stream_frames_total", stage="unanswered") == report.frames_dropped_model
    assert run.metric("vss_stream_frames_total", stage="inferred") == 0
    assert run.metric("vss_stream_frames_total", stage="dropped") == state.frames_dropped
    # every sampled frame was taken (and unanswered), dropped for a newer one, or is the one left in the slot
    assert max(backlog) <= 2 and 0 <= state.frames_sampled - state.frames_dropped - report.frames_dropped_model <= 1
    if how == "hung":  # each call waits 1 s while ~5 frames are sampled: the slot drops, it does not queue
        assert state.frames_dropped >= 2 * report.frames_dropped_model, (state.frames_dropped,
                                                                         report.frames_dropped_model)
