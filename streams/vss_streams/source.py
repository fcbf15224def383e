"""Frames from a camera or a recording, decoded by FFmpeg (PyAV), sampled to the stream's rate.

Decoding blocks, so it runs on a thread of its own and hands frames to the event loop through a `FrameSlot`:
`live` keeps only the newest frame (an older one not yet taken is dropped and counted: lag stays bounded),
`exhaustive` keeps every sampled frame and makes the decoder wait (recordings, where nothing is lost).
A live source that fails or ends is reopened with capped exponential backoff; a file ends the stream."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import av
import numpy as np
from numpy.typing import NDArray

from vss_api.vssstream import Sampling, SamplingMode, Source

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
    since: float = field(default_factory=time.time)
    last_error: str = ""
    reconnects: int = 0
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_dropped: int = 0
    resolution: tuple[int, int] | None = None
    ended: bool = False


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


def open_options(source: Source, username: str = "", password: str = "") -> tuple[str, dict[str, str]]:
    """The URL FFmpeg opens (credentials added here, never logged) and its options."""
    url = source.url
    if username:
        parts = urlsplit(url)
        url = parts._replace(netloc=f"{username}:{password}@{parts.netloc}").geturl()
    options: dict[str, str] = {}
    if url.startswith(("rtsp://", "rtsps://")):
        # timeout is in microseconds: a camera that stops sending is noticed within 5 s
        options = {"rtsp_transport": source.transport.value, "timeout": "5000000"}
    elif url.startswith(("http://", "https://")):
        options = {"rw_timeout": "5000000", "reconnect": "0"}
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    return url, options


def is_live(source: Source) -> bool:
    return not source.url.startswith("file://")


class Decoder:
    """Runs the decode loop on its own thread until `stop()`; frames go to `slot`."""

    def __init__(self, source: Source, sampling: Sampling, slot: FrameSlot, state: SourceState, *,
                 credentials: tuple[str, str] = ("", ""), backoff: tuple[float, float] = (0.5, 10.0),
                 sleep: Callable[[float], bool] | None = None) -> None:
        self.source, self.sampling, self.slot, self.state = source, sampling, slot, state
        self._credentials = credentials
        self._backoff = backoff
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread = threading.Thread(target=self._run, name="vss-decoder", daemon=True)
        self._index = 0
        self._time_offset = 0.0
        self._last_time = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
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
                    self._disconnected("the source ended the stream")
                except (av.FFmpegError, OSError) as exc:
                    self._disconnected(_describe(exc))
                if self._stop.is_set() or self._sleep(delay):
                    return
                delay = min(delay * 2, self._backoff[1])
                self.state.reconnects += 1
        finally:
            self.state.ended = True
            self.slot.put(None, self._stop)

    def _disconnected(self, reason: str) -> None:
        if self.state.connected or not self.state.last_error:
            self.state.since = time.time()
        self.state.connected = False
        self.state.last_error = reason
        log.warning("stream source lost: %s", reason)
        # frame times continue across the gap, so tracks and dwell times do not jump backwards
        self._time_offset = self._last_time + 1.0 / self.sampling.fps

    def _frames(self) -> Iterator[Frame]:
        url, options = open_options(self.source, *self._credentials)
        with av.open(url, options=options, timeout=10.0) as container:
            video = container.streams.video[0]
            video.thread_type = "AUTO"
            step = 1.0 / self.sampling.fps
            next_sample = None
            started = None
            for decoded in container.decode(video):
                if self._stop.is_set():
                    return
                if not self.state.connected:
                    self.state.connected, self.state.since, self.state.last_error = True, time.time(), ""
                self.state.frames_decoded += 1
                pts = float(decoded.time) if decoded.time is not None else self.state.frames_decoded / 30.0
                started = pts if started is None else started
                at = self._time_offset + pts - started
                if next_sample is not None and at + 1e-6 < next_sample:
                    continue
                next_sample = at + step if next_sample is None else max(next_sample + step, at)
                pixels = np.asarray(decoded.to_ndarray(format="rgb24"), np.uint8)
                self.state.resolution = (pixels.shape[1], pixels.shape[0])
                self.state.frames_sampled += 1
                self._last_time = at
                self._index += 1
                yield Frame(self._index - 1, at, pixels, time.monotonic())


def _describe(exc: BaseException) -> str:
    """An FFmpeg error without the URL (it may carry credentials)."""
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
