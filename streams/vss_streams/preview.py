"""The annotated preview of a stream: the newest inferred frame with its tracked boxes (track id and class), the
lines with their in/out counts and the zones with their occupancy, resized to `spec.preview.width` and
JPEG-encoded, for the worker's `/preview.mjpeg` and its live page.

The worker hands every inferred frame to `on_frame` on the event loop: it only keeps a reference to the newest
(never more than one frame is held). Frames are drawn and encoded on a thread, at most `preview.fps` times a
second and only while someone watches: a stream nobody looks at costs nothing here."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vss_api.vssstream import Analytics, Direction
from vss_api.vssstream import Preview as PreviewSpec
from vss_streams.analytics import Analyzer, Event, TrackedObject
from vss_streams.source import Frame

log = logging.getLogger(__name__)

JPEG_QUALITY = 80
# BGR, by class; any other class takes the last
_CLASS_COLOURS = {"person": (60, 200, 60), "vehicle": (240, 160, 40)}
_OTHER_COLOUR = (200, 200, 200)
_LINE_COLOUR = (40, 220, 255)
_ZONE_COLOUR = (230, 80, 230)


def live_counts(analyzer: Analyzer) -> dict[str, Any]:
    """Counts per line, direction and class, and occupancy per zone and class, as JSON. Every configured line and
    zone is listed (with nothing counted yet too); a line counted before an edit removed it stays listed."""
    lines: dict[str, dict[str, dict[str, int]]] = {
        line.name: {direction.value: {} for direction in Direction} for line in analyzer.analytics.lines}
    for (name, direction, class_name), n in sorted(analyzer.line_counts.items()):
        lines.setdefault(name, {d.value: {} for d in Direction})[direction.value][class_name] = n
    zones: dict[str, dict[str, int]] = {zone.name: {} for zone in analyzer.analytics.zones}
    for (name, class_name), n in sorted(analyzer.occupancy().items()):
        zones.setdefault(name, {})[class_name] = n
    return {"lines": lines, "zones": zones}


@dataclass(frozen=True)
class _Scene:
    """What one preview image shows; taken on the event loop, drawn on a thread."""

    frame: Frame
    objects: tuple[TrackedObject, ...]
    analytics: Analytics
    counts: dict[str, Any]


def render(frame: NDArray[np.uint8], objects: Sequence[TrackedObject], analytics: Analytics,
           counts: dict[str, Any], width: int) -> NDArray[np.uint8]:
    """FRAME (H, W, 3 RGB) annotated and resized to WIDTH, as BGR for OpenCV's encoder."""
    height, source_width = frame.shape[:2]
    scale = width / source_width
    out_height = max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (width, out_height), interpolation=interpolation)
    image: NDArray[np.uint8] = np.ascontiguousarray(cv2.cvtColor(resized, cv2.COLOR_RGB2BGR), dtype=np.uint8)
    thickness = max(2, round(width / 480))
    font = 0.45 * max(0.75, width / 960)

    def at(point: Sequence[float]) -> tuple[int, int]:  # a point in fractions of the frame
        return round(point[0] * width), round(point[1] * out_height)

    if analytics.zones:
        overlay = image.copy()
        for zone in analytics.zones:
            cv2.fillPoly(overlay, [np.array([at(p) for p in zone.polygon], np.int32)], _ZONE_COLOUR)
        cv2.addWeighted(overlay, 0.22, image, 0.78, 0, dst=image)
    for zone in analytics.zones:
        polygon = np.array([at(p) for p in zone.polygon], np.int32)
        cv2.polylines(image, [polygon], True, _ZONE_COLOUR, thickness, cv2.LINE_AA)
        inside = sum(counts["zones"].get(zone.name, {}).values())
        x, y = polygon.min(axis=0)
        _label(image, f"{zone.name}: {inside} inside", (int(x) + 4, int(y) + 4), _ZONE_COLOUR, font, below=True)
    for line in analytics.lines:
        start, end = at(line.start), at(line.end)
        cv2.line(image, start, end, _LINE_COLOUR, thickness + 1, cv2.LINE_AA)
        tally = counts["lines"].get(line.name, {})
        n_in, n_out = sum(tally.get("in", {}).values()), sum(tally.get("out", {}).values())
        middle = ((start[0] + end[0]) // 2, (start[1] + end[1]) // 2)
        _label(image, f"{line.name}  in {n_in}  out {n_out}", (middle[0], middle[1] - 6), _LINE_COLOUR, font)
    for obj in objects:
        colour = _CLASS_COLOURS.get(obj.class_name, _OTHER_COLOUR)
        x1, y1, x2, y2 = (round(v * scale) for v in obj.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_8)
        _label(image, f"#{obj.track_id} {obj.class_name}", (x1, y1 - 2), colour, font)
    return image


def _label(image: NDArray[np.uint8], text: str, origin: tuple[int, int], colour: tuple[int, int, int],
           scale: float, *, below: bool = False) -> None:
    """TEXT on a dark box, kept inside the image; ORIGIN is its bottom-left (top-left when BELOW)."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = min(max(0, origin[0]), max(0, image.shape[1] - w - 4))
    y = origin[1] + h + 4 if below else origin[1]
    y = min(max(h + 4, y), image.shape[0] - base - 2)
    cv2.rectangle(image, (x, y - h - 4), (x + w + 4, y + base), (20, 20, 20), cv2.FILLED)
    cv2.putText(image, text, (x + 2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def encode_jpeg(image: NDArray[np.uint8]) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode the preview as JPEG")
    return bytes(encoded)


@dataclass
class Jpeg:
    data: bytes
    frame: int  # the index of the frame it shows
    sequence: int  # 1, 2, ... per preview: a watcher waits for a higher one


@dataclass(eq=False)
class Preview:
    """The preview of one stream. Register `on_frame` as a frame listener; watchers iterate `watch()`."""

    spec: PreviewSpec
    analyzer: Analyzer
    encoded: int = 0  # JPEGs made, for tests and curiosity
    _newest: tuple[Frame, tuple[TrackedObject, ...]] | None = field(default=None, init=False)
    _jpeg: Jpeg | None = field(default=None, init=False)
    _watchers: int = field(default=0, init=False)
    _closed: bool = field(default=False, init=False)
    _frame_ready: asyncio.Event | None = field(default=None, init=False)
    _jpeg_ready: asyncio.Condition | None = field(default=None, init=False)
    _encoder: asyncio.Task[None] | None = field(default=None, init=False)

    @property
    def watchers(self) -> int:
        return self._watchers

    @property
    def latest(self) -> Jpeg | None:
        """The newest JPEG made (None before the first watcher)."""
        return self._jpeg

    def on_frame(self, frame: Frame, objects: list[TrackedObject], _: list[Event]) -> None:
        """A frame listener (on the event loop): keeps the newest frame, drops the one before."""
        self._newest = (frame, tuple(objects))
        if self._frame_ready is not None:
            self._frame_ready.set()

    async def watch(self) -> AsyncGenerator[Jpeg, None]:
        """Each new JPEG while the caller iterates; a slow caller skips to the newest. Ends on `close()`."""
        self._start()
        assert self._jpeg_ready is not None
        last = 0
        try:
            while not self._closed:
                async with self._jpeg_ready:
                    await self._jpeg_ready.wait_for(functools.partial(self._newer_than, last))
                jpeg = self._jpeg
                if self._closed or jpeg is None:
                    return
                last = jpeg.sequence
                yield jpeg
        finally:
            self._watchers -= 1
            if self._watchers == 0 and self._encoder is not None:
                self._encoder.cancel()  # nobody looks: stop encoding (the task ends at its next await)
                self._encoder = None

    def _newer_than(self, sequence: int) -> bool:
        return self._closed or (self._jpeg is not None and self._jpeg.sequence > sequence)

    async def close(self) -> None:
        """Ends every `watch()` (the server shuts down)."""
        self._closed = True
        if self._jpeg_ready is not None:
            async with self._jpeg_ready:
                self._jpeg_ready.notify_all()
        if self._encoder is not None:
            self._encoder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._encoder
            self._encoder = None

    def _start(self) -> None:
        if self._frame_ready is None or self._jpeg_ready is None:
            self._frame_ready, self._jpeg_ready = asyncio.Event(), asyncio.Condition()
            if self._newest is not None:
                self._frame_ready.set()
        self._watchers += 1
        if self._encoder is None:
            self._encoder = asyncio.get_running_loop().create_task(self._encode_loop(), name="vss-preview")

    async def _encode_loop(self) -> None:
        assert self._frame_ready is not None and self._jpeg_ready is not None
        period = 1.0 / self.spec.fps
        while True:
            if self._jpeg is not None and self._newest is not None and self._newest[0].index == self._jpeg.frame:
                self._frame_ready.clear()  # this frame is out already: wait for a newer one
                await self._frame_ready.wait()
            if self._newest is None:
                await self._frame_ready.wait()
                continue
            started = time.monotonic()
            frame, objects = self._newest
            scene = _Scene(frame, objects, self.analyzer.analytics, live_counts(self.analyzer))
            try:
                data = await asyncio.to_thread(self._draw, scene)
            except (cv2.error, ValueError):
                log.exception("preview of frame %d not drawn", frame.index)
                data = None
            if data is not None:
                self.encoded += 1
                sequence = self._jpeg.sequence + 1 if self._jpeg is not None else 1
                async with self._jpeg_ready:
                    self._jpeg = Jpeg(data, frame.index, sequence)
                    self._jpeg_ready.notify_all()
            await asyncio.sleep(max(0.0, started + period - time.monotonic()))

    def _draw(self, scene: _Scene) -> bytes:
        image = render(scene.frame.pixels, scene.objects, scene.analytics, scene.counts, self.spec.width)
        return encode_jpeg(image)
