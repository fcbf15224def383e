"""The worker's HTTP side over real HTTP on loopback: /healthz and /metrics; the live page; /counts; the /events
WebSocket (a snapshot, then each event in order, and a slow client that loses its oldest events without holding
anyone up); /preview.mjpeg (JPEG parts at the configured width) and the 404s when a spec turns them off. The
worker is not run: the test feeds its analyzer, hub and frame listeners what `StreamWorker._process` would, so
the model is never called."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import cv2
import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry

from vss_api.vssstream import Direction, VSSStreamSpec
from vss_streams.analytics import Event, EventKind, TrackedObject
from vss_streams.inference import DetectionClient
from vss_streams.source import Frame
from vss_streams.status_server import start_status_server, status_app
from vss_streams.worker import StreamWorker

W, H = 640, 480
DOOR = {"name": "door", "from": [0.0, 0.5], "to": [1.0, 0.5]}  # walking down the frame crosses it "in"
LOBBY = {"name": "lobby", "polygon": [[0.0, 0.6], [0.5, 0.6], [0.5, 1.0], [0.0, 1.0]]}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _worker(**spec: Any) -> StreamWorker:
    document = {"source": {"url": "file:///clips/none.mp4"}, "model": {"name": "d"},
                "analytics": {"lines": [DOOR], "zones": [LOBBY]}, **spec}
    return StreamWorker("gate", VSSStreamSpec.model_validate(document), DetectionClient("127.0.0.1:9", "d"))


def _feed(worker: StreamWorker, index: int, objects: list[TrackedObject]) -> list[Event]:
    """One inferred frame, as `StreamWorker._process` hands it on after the model answered."""
    pixels = np.full((H, W, 3), 90, np.uint8)
    for place, digit in enumerate(f"{index:03d}"):  # the preview's images tell which frame they show, top right
        pixels[:48, W - 144 + 48 * place:W - 96 + 48 * place] = 20 + 20 * int(digit)
    frame = Frame(index, index / 5.0, pixels, time.monotonic())
    events = worker.analyzer.update(objects, W, H, frame.time, frame.index)
    for event in events:
        worker.hub.publish(event)
    for listener in worker.frame_listeners:
        listener(frame, objects, events)
    return events


def _walk_down(worker: StreamWorker, track_id: int, first_frame: int, x: float = 0.25) -> list[Event]:
    """A person walking down across `door` and into `lobby`: a crossing in, then a zone entry."""
    events = []
    for step, feet in enumerate((0.30, 0.36, 0.42, 0.48, 0.56, 0.64, 0.72)):
        box = (x * W - 20, feet * H - 80, x * W + 20, feet * H)
        events += _feed(worker, first_frame + step, [TrackedObject(track_id, "person", box)])
    return events


async def _close(worker: StreamWorker) -> None:
    assert isinstance(worker.client, DetectionClient)
    await worker.client.close()


@asynccontextmanager
async def _serving(worker: StreamWorker, **options: Any) -> AsyncIterator[str]:
    runner = web.AppRunner(status_app(worker, **options), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    port = _port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await _close(worker)


async def _until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline_s}s: {what}")
        await asyncio.sleep(0.01)


async def _collect(ws: aiohttp.ClientWebSocketResponse, into: list[dict[str, Any]]) -> None:
    async for message in ws:
        into.append(json.loads(message.data))


def test_healthz_is_200_while_the_stream_runs_and_503_once_its_source_ended_and_metrics_are_served() -> None:
    async def run() -> list[tuple[int, bytes]]:
        spec = VSSStreamSpec.model_validate({"source": {"url": "file:///clips/none.mp4"}, "model": {"name": "d"}})
        client = DetectionClient("127.0.0.1:9", "d")
        worker = StreamWorker("gate", spec, client)
        worker.metrics.frames.labels("gate", "inferred").inc(3)
        port = _port()
        runner = await start_status_server(worker, port, host="127.0.0.1")
        try:
            base = f"http://127.0.0.1:{port}"
            running = await asyncio.to_thread(_get, f"{base}/healthz")
            metrics = await asyncio.to_thread(_get, f"{base}/metrics")
            worker.state.ended = True
            ended = await asyncio.to_thread(_get, f"{base}/healthz")
            return [running, metrics, ended]
        finally:
            await runner.cleanup()
            await client.close()

    running, metrics, ended = asyncio.run(run())

    assert running[0] == 200 and json.loads(running[1])["stream"] == "gate"
    assert metrics[0] == 200 and b'vss_stream_frames_total{stage="inferred",stream="gate"} 3.0' in metrics[1]
    assert ended[0] == 503


def test_the_live_page_is_served_with_no_external_assets_and_counts_are_json() -> None:
    async def run() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        worker = _worker()
        _walk_down(worker, 1, 0)
        async with _serving(worker) as at:
            return (await asyncio.to_thread(_get, f"http://{at}/"),
                    await asyncio.to_thread(_get, f"http://{at}/counts"))

    (page_status, page), (counts_status, counts) = asyncio.run(run())

    assert page_status == 200 and b"<title>" in page
    assert b"preview.mjpeg" in page and b'"events"' in page and b"WebSocket" in page
    for external in (b"http://", b"https://", b"//cdn", b"<link"):
        assert external not in page
    assert counts_status == 200
    assert json.loads(counts) == {
        "stream": "gate", "ended": False, "connected": False, "previewEnabled": True, "events": True,
        "lines": {"door": {"in": {"person": 1}, "out": {}}}, "zones": {"lobby": {"person": 1}}}


def test_events_gives_a_snapshot_with_the_last_events_then_each_event_in_order_and_the_counts_after_it() -> None:
    async def run() -> tuple[list[Event], list[Event], list[dict[str, Any]]]:
        worker = _worker()
        async with _serving(worker) as at, aiohttp.ClientSession() as session:
            before = _walk_down(worker, 1, 0)
            async with session.ws_connect(f"http://{at}/events") as ws:
                received: list[dict[str, Any]] = []
                reader = asyncio.create_task(_collect(ws, received))
                await _until(lambda: len(received) >= 1, 10, "the snapshot")
                after = _walk_down(worker, 2, 10, x=0.3) + _walk_down(worker, 3, 20, x=0.35)
                await _until(lambda: sum(m["type"] == "event" for m in received) >= len(after)
                             and received[-1]["type"] == "counts", 10, "the events and the counts after them")
                await ws.close()
                await reader
        return before, after, received

    before, after, received = asyncio.run(run())

    assert [e.kind for e in before] == [EventKind.LINE_CROSSED, EventKind.ZONE_ENTERED]
    snapshot = received[0]
    assert snapshot["type"] == "counts"
    assert snapshot["lines"] == {"door": {"in": {"person": 1}, "out": {}}}
    assert snapshot["zones"] == {"lobby": {"person": 1}}
    assert snapshot["recent"] == [e.to_json() for e in before]
    events = [{k: v for k, v in m.items() if k != "type"} for m in received if m["type"] == "event"]
    assert events == [e.to_json() for e in after]
    assert [(e["trackId"], e["kind"]) for e in events] == [
        (2, "lineCrossed"), (2, "zoneEntered"), (3, "lineCrossed"), (3, "zoneEntered")]
    assert received[-1]["lines"]["door"] == {"in": {"person": 3}, "out": {}}
    assert received[-1]["zones"]["lobby"] == {"person": 3}


def _event(n: int) -> Event:
    return Event("gate", EventKind.LINE_CROSSED, "door", "person", n, n / 5.0, n, (1.0, 2.0, 3.0, 4.0),
                 direction=Direction.IN)


async def _stalled_websocket(at: str) -> socket.socket:
    """A WebSocket client that never reads: a tiny receive buffer, the handshake by hand, then nothing."""
    host, port = at.split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, (host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(raw, (f"GET /events HTTP/1.1\r\nHost: {at}\r\nUpgrade: websocket\r\n"
                                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += await loop.sock_recv(raw, 1)  # up to the end of the headers only: the rest stays unread
    assert reply.startswith(b"HTTP/1.1 101"), reply
    return raw


def test_a_client_that_stops_reading_loses_its_oldest_events_and_holds_up_neither_the_stream_nor_others() -> None:
    async def run() -> tuple[list[int], int, int, int, bytes]:
        worker = _worker()
        async with _serving(worker, events_queue=64) as at, aiohttp.ClientSession() as session:
            stalled = await _stalled_websocket(at)
            await _until(lambda: len(worker.hub.subscriptions) == 1, 10, "the stalled client subscribed")
            slow = worker.hub.subscriptions[0]
            async with session.ws_connect(f"http://{at}/events") as ws:
                received: list[dict[str, Any]] = []
                reader = asyncio.create_task(_collect(ws, received))
                await _until(lambda: len(received) >= 1, 10, "the fast client's snapshot")
                n = 0
                end = time.monotonic() + 60
                while slow.dropped == 0 and time.monotonic() < end:  # until the stalled client's queue overflowed
                    for _ in range(50):
                        worker.hub.publish(_event(n))  # synchronous: it cannot wait for a client
                        n += 1
                    await _until(lambda: sum(m["type"] == "event" for m in received) == n, 10,  # noqa: B023
                                 "the fast client has every event so far")
                await ws.close()
                await reader
            metrics = await asyncio.to_thread(_get, f"http://{at}/metrics")
            stalled.close()
            return ([m["frame"] for m in received if m["type"] == "event"], n, slow.dropped, slow.pending(),
                    metrics[1])

    frames, published, dropped, pending, metrics = asyncio.run(asyncio.wait_for(run(), 120))

    assert dropped > 0, "the stalled client never fell behind: the test did not stall it"
    assert frames == list(range(published))  # the fast client: every event, in order
    assert pending <= 64  # the stalled client's queue stays bounded
    assert f'vss_stream_sink_dropped_total{{sink="websocket",stream="gate"}} {float(dropped)}'.encode() in metrics


def _parts(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The complete parts of a multipart body so far: each is followed by the next boundary."""
    parts = []
    for chunk in body.split(b"--" + boundary + b"\r\n")[1:-1]:
        head, separator, rest = chunk.partition(b"\r\n\r\n")
        assert separator and rest.endswith(b"\r\n"), chunk[:200]
        parts.append((dict(line.split(": ", 1) for line in head.decode().split("\r\n")), rest[:-2]))
    return parts


def _shown(jpeg: bytes) -> tuple[tuple[int, ...], int]:
    """The shape of a preview image and the frame it shows (the digits `_feed` drew, at the preview's scale)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    side = round(48 * image.shape[1] / W)
    digits = [round((float(np.median(image[side // 4:side * 3 // 4, x + side // 4:x + side * 3 // 4])) - 20) / 20)
              for x in range(image.shape[1] - 3 * side, image.shape[1], side)]
    return image.shape, digits[0] * 100 + digits[1] * 10 + digits[2]


def test_the_mjpeg_preview_gives_jpeg_parts_of_the_configured_width_and_follows_the_newest_frame() -> None:
    async def run() -> tuple[str, list[tuple[dict[str, str], bytes]]]:
        worker = _worker(preview={"width": 320, "fps": 20})
        async with _serving(worker) as at, aiohttp.ClientSession() as session:
            _walk_down(worker, 1, 0)
            reply = await session.get(f"http://{at}/preview.mjpeg")
            body = b""
            boundary = reply.headers["Content-Type"].split("boundary=")[1].encode()
            feeding: asyncio.Task[None] | None = None

            async def more_frames() -> None:
                for i in range(100, 200):
                    _feed(worker, i, [TrackedObject(9, "vehicle", (100.0, 100.0, 300.0, 200.0))])
                    await asyncio.sleep(0.01)

            end = time.monotonic() + 20
            while len(parts := _parts(body, boundary)) < 3 or _shown(parts[-1][1])[1] < 100:
                assert time.monotonic() < end, "no part of a newer frame within 20 s"
                body += await reply.content.readany()
                if feeding is None and _parts(body, boundary):  # newer frames only once the first part is out
                    feeding = asyncio.create_task(more_frames())
            assert feeding is not None
            await feeding
            reply.close()
            return reply.headers["Content-Type"], _parts(body, boundary)

    content_type, parts = asyncio.run(asyncio.wait_for(run(), 60))

    assert content_type.startswith("multipart/x-mixed-replace; boundary=")
    shown = [_shown(jpeg) for _, jpeg in parts]
    assert shown[0] == ((240, 320, 3), 6)  # the newest frame when the client came, not the first
    for (headers, jpeg), (shape, _) in zip(parts, shown, strict=True):
        assert headers == {"Content-Type": "image/jpeg"} and jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        assert shape == (240, 320, 3)
    assert [frame for _, frame in shown] == sorted(frame for _, frame in shown)


def test_a_disabled_preview_and_websocket_are_404_and_the_page_still_serves_the_counts() -> None:
    async def run() -> list[int]:
        worker = _worker(preview={"enabled": False}, sinks={"websocket": False})
        async with _serving(worker) as at:
            return [(await asyncio.to_thread(_get, f"http://{at}/{path}"))[0]
                    for path in ("preview.mjpeg", "events", "", "counts")]

    assert asyncio.run(run()) == [404, 404, 200, 200]


def test_stopping_the_server_ends_open_previews_and_websockets_promptly() -> None:
    async def run() -> float:
        worker = _worker()
        runner = await start_status_server(worker, port := _port(), host="127.0.0.1")
        _walk_down(worker, 1, 0)
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/events")
            mjpeg = await session.get(f"http://127.0.0.1:{port}/preview.mjpeg")
            await mjpeg.content.readany()
            started = time.monotonic()
            await runner.cleanup()
            took = time.monotonic() - started
            ws_closed = await ws.receive()
            mjpeg.close()
        await _close(worker)
        assert ws_closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.TEXT)
        return took

    assert asyncio.run(asyncio.wait_for(run(), 30)) < 3.0


def test_a_worker_holding_several_streams_serves_each_under_its_name_and_one_health_for_the_pod() -> None:
    async def run() -> dict[str, tuple[int, bytes]]:
        workers = [_named_worker("north"), _named_worker("south")]
        port = _port()
        runner = await start_status_server(workers, port, host="127.0.0.1")
        try:
            return {path: await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/{path}")
                    for path in ("", "healthz", "streams/north/counts", "streams/south/", "streams/south/healthz")}
        finally:
            await runner.cleanup()
            for worker in workers:
                await _close(worker)

    got = asyncio.run(run())

    assert got[""][0] == 200 and b'href="streams/north/"' in got[""][1] and b'href="streams/south/"' in got[""][1]
    assert got["healthz"][0] == 200 and set(json.loads(got["healthz"][1])) == {"north", "south"}
    assert got["streams/north/counts"][0] == 200 and json.loads(got["streams/north/counts"][1])["stream"] == "north"
    assert got["streams/south/"][0] == 200 and b"<html" in got["streams/south/"][1].lower()
    assert got["streams/south/healthz"][0] == 200


_SHARED = CollectorRegistry()  # one process's registry, as vss stream gives its workers


def _named_worker(name: str) -> StreamWorker:
    document = {"source": {"url": "file:///clips/none.mp4"}, "model": {"name": "d"},
                "analytics": {"lines": [DOOR], "zones": [LOBBY]}}
    return StreamWorker(name, VSSStreamSpec.model_validate(document), DetectionClient("127.0.0.1:9", "d"),
                        registry=_SHARED)
