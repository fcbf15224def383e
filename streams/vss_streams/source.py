"""Frames from a camera or a recording, decoded by FFmpeg (PyAV), sampled to the stream's rate.

Decoding blocks, so it runs on a thread of its own and hands frames to the event loop through a `FrameSlot`:
`live` keeps only the newest frame (an older one not yet taken is dropped and counted: lag stays bounded),
`exhaustive` keeps every sampled frame and makes the decoder wait (recordings, where nothing is lost).
A live source that fails or ends is reopened with capped exponential backoff (PyAV's open and read timeouts and
FFmpeg's socket timeout make a dead or silent server an error, never a decoder blocked for good); a file ends the
stream, at its end or at an error (reopening it would replay it). Frame times go on across reconnects."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import av
import numpy as np
from numpy.typing import NDArray

from vss_api.vssstream import Sampling, SamplingMode, Source, SourceStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    index: int  # decoded frames since the stream started, across reconnects
    time: float  # seconds: the frame's presentation time, continued across reconnects
    pixels: NDArray[np.uint8]  # H, W, 3 RGB
    received: float  # time.monotonic() when it was decoded


@dataclass
class SourceState:
    """What the source is doing, for status and metrics (written by the decoder thread, read anywhere)."""

    connected: bool = False
    since: float = field(default_factory=time.time)  # time.time() it last connected or was lost
    last_error: str = ""  # why it is not connected (no credentials); "" while connected
    reconnects: int = 0
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_dropped: int = 0
    resolution: tuple[int, int] | None = None  # width, height of the frames decoded now (the last ones)
    ended: bool = False

    def to_status(self) -> SourceStatus:
        """The VSSStream's status.source: `since` as RFC 3339, `resolution` as WIDTHxHEIGHT."""
        since = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        resolution = f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else None
        return SourceStatus(connected=self.connected, since=since, last_error=self.last_error,
                            reconnects=self.reconnects, resolution=resolution)


class FrameSlot:
    """Hands frames from the decoder thread to the event loop, `live` or `exhaustive`."""

    def __init__(self, mode: SamplingMode, loop: asyncio.AbstractEventLoop, state: SourceState,
                 capacity: int = 8) -> None:
        self.mode, self._loop, self._state = mode, loop, state
        self._frames: deque[Frame | None] = deque()
        self._capacity = 1 if mode is SamplingMode.LIVE else capacity
        self._lock = threading.Condition()
        self._ready = asyncio.Event()

    def put(self, frame: Frame | None, stop: threading.Event) -> None:
        """From the decoder thread; `None` ends the stream."""
        with self._lock:
            if frame is None:
                pass  # the end always goes in: nothing waits for room to say it
            elif self.mode is SamplingMode.LIVE:
                while self._frames and self._frames[0] is not None:
                    self._frames.popleft()
                    self._state.frames_dropped += 1
            else:
                while len(self._frames) >= self._capacity and not stop.is_set():
                    self._lock.wait(0.1)
            self._frames.append(frame)
        self._loop.call_soon_threadsafe(self._ready.set)

    async def get(self) -> Frame | None:
        while True:
            with self._lock:
                if self._frames:
                    frame = self._frames.popleft()
                    self._lock.notify_all()
                    return frame
                self._ready.clear()
            await self._ready.wait()


SOCKET_TIMEOUT_S = 5.0  # FFmpeg's own socket I/O timeout (rtsp `timeout`, http `rw_timeout`)


def open_options(source: Source, username: str = "", password: str = "") -> tuple[str, dict[str, str]]:
    """The URL FFmpeg opens (credentials added here, never logged) and its options."""
    url = source.url
    if username:
        parts = urlsplit(url)
        url = parts._replace(netloc=f"{username}:{password}@{parts.netloc}").geturl()
    options: dict[str, str] = {}
    if url.startswith(("rtsp://", "rtsps://")):
        # timeout is in microseconds: a camera that stops sending is noticed within 5 s
        options = {"rtsp_transport": source.transport.value, "timeout": str(int(SOCKET_TIMEOUT_S * 1e6))}
    elif url.startswith(("http://", "https://")):
        options = {"rw_timeout": str(int(SOCKET_TIMEOUT_S * 1e6)), "reconnect": "0"}
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    return url, options


def is_live(source: Source) -> bool:
    return not source.url.startswith("file://")


OPEN_TIMEOUT_S = 10.0  # PyAV's interrupt: opening (connect, DESCRIBE, SETUP, PLAY, probing) gives up after it
READ_TIMEOUT_S = 8.0  # and a read that brings nothing: a server that stopped sending, whatever the protocol
BACKWARD_JUMP_S = 1.0  # a frame this much older than the last one kept: the source's clock went back


class SampleClock:
    """Each decoded frame's stream time, from its own presentation time, continued across reconnects and across
    a source clock that goes back (a camera that restarts its timestamps, a server looping a recording), and
    whether the stream's rate keeps it. Times never go back, so tracks and dwell times do not jump."""

    def __init__(self, fps: float) -> None:
        self.step = 1.0 / fps
        self.last: float | None = None  # the last kept frame's time
        self._offset = 0.0
        self._started: float | None = None  # this connection's (or run's) first presentation time
        self._next: float | None = None  # the earliest time the next kept frame may have

    def reconnected(self) -> None:
        """A new connection: its first frame follows the last kept one by a step."""
        self._offset = (self.last if self.last is not None else 0.0) + self.step
        self._started = self._next = None

    def sample(self, pts: float) -> float | None:
        """The frame's time if the rate keeps it, else None."""
        if self._started is None:
            self._started = pts
        at = self._offset + pts - self._started
        if self.last is not None and at < self.last - BACKWARD_JUMP_S:
            self.reconnected()
            self._started = pts
            at = self._offset
        if self._next is not None and at + 1e-6 < self._next:
            return None
        self._next = at + self.step if self._next is None else max(self._next + self.step, at)
        self.last = at
        return at


class Decoder:
    """Runs the decode loop on its own thread until `stop()`; frames go to `slot`."""

    def __init__(self, source: Source, sampling: Sampling, slot: FrameSlot, state: SourceState, *,
                 credentials: tuple[str, str] = ("", ""), backoff: tuple[float, float] = (0.5, 10.0),
                 sleep: Callable[[float], bool] | None = None,
                 timeouts: tuple[float, float] = (OPEN_TIMEOUT_S, READ_TIMEOUT_S)) -> None:
        self.source, self.sampling, self.slot, self.state = source, sampling, slot, state
        self._credentials = credentials
        self._backoff = backoff
        self._timeouts = timeouts
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread = threading.Thread(target=self._run, name="vss-decoder", daemon=True)
        self._index = 0
        self._clock = SampleClock(sampling.fps)
        self._opened = False  # the current attempt got past av.open (a timeout is then a read's)
        self._attempt_started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the decode loop: at the next frame, or once a blocked open or read gives up (its timeouts)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = self._backoff[0]
        try:
            while not self._stop.is_set():
                try:
                    for frame in self._frames():
                        self.slot.put(frame, self._stop)
                        delay = self._backoff[0]
                        if self._stop.is_set():
                            return
                    if not is_live(self.source):
                        return
                    if self._stop.is_set():
                        return
                    self._disconnected("the source ended the stream (end of stream or connection closed)")
                except (av.FFmpegError, OSError, NoVideo) as exc:
                    if self._stop.is_set():
                        return
                    self._disconnected(self._reason(exc))
                    if not is_live(self.source):
                        # a recording that cannot be read ends: reopening it would replay (and count) it again
                        return
                if self._stop.is_set() or self._sleep(delay):
                    return
                delay = min(delay * 2, self._backoff[1])
                self.state.reconnects += 1
        finally:
            self.state.ended = True
            self.slot.put(None, self._stop)

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, NoVideo):
            return str(exc)
        if isinstance(exc, av.ExitError):  # PyAV's interrupt: its open or read timeout ran out
            return (f"timed out: nothing read from the source for {self._timeouts[1]:g} s" if self._opened else
                    f"timed out: the source did not open within {self._timeouts[0]:g} s")
        waited = time.monotonic() - self._attempt_started
        if not self._opened and isinstance(exc, av.InvalidDataError) and waited >= 0.9 * SOCKET_TIMEOUT_S:
            # FFmpeg's RTSP says "invalid data" when a reply never came within its socket timeout
            return f"timed out: the source did not answer within {waited:.0f} s ({_describe(exc)})"
        return _describe(exc)

    def _disconnected(self, reason: str) -> None:
        if self.state.connected or not self.state.last_error:
            self.state.since = time.time()
        self.state.connected = False
        self.state.last_error = reason
        log.warning("stream source lost: %s", reason)
        # frame times continue across the gap, so tracks and dwell times do not jump backwards
        self._clock.reconnected()

    def _frames(self) -> Iterator[Frame]:
        url, options = open_options(self.source, *self._credentials)
        self._opened, self._attempt_started = False, time.monotonic()
        with av.open(url, options=options, timeout=self._timeouts) as container:
            self._opened = True
            if not container.streams.video:
                raise NoVideo("the source has no video stream")
            video = container.streams.video[0]
            video.thread_type = "AUTO"
            for decoded in container.decode(video):
                if self._stop.is_set():
                    return
                if not self.state.connected:
                    self.state.connected, self.state.since, self.state.last_error = True, time.time(), ""
                self.state.frames_decoded += 1
                # the resolution of what is decoded now, sampled or not (a camera that changed it says so at once)
                if self.state.resolution != (decoded.width, decoded.height):
                    self.state.resolution = (decoded.width, decoded.height)
                pts = float(decoded.time) if decoded.time is not None else self.state.frames_decoded / 30.0
                at = self._clock.sample(pts)
                if at is None:
                    continue
                pixels = np.asarray(decoded.to_ndarray(format="rgb24"), np.uint8)
                self.state.frames_sampled += 1
                self._index += 1
                yield Frame(self._index - 1, at, pixels, time.monotonic())


class NoVideo(Exception):
    """The source opened but carries no video stream."""


def _describe(exc: BaseException) -> str:
    """An FFmpeg error without the URL (it may carry credentials)."""
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
