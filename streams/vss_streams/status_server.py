"""The worker's HTTP side, all on one port (the Service's 8090):

- `/healthz` for the kubelet's probes (200 while the stream runs, with what the source is doing; 503 once it has
  ended) and `/metrics` for Prometheus;
- `/` the live page: the annotated preview, the counts per line and zone as they change, the last events (plain
  HTML and JS, `live/index.html`, no external assets);
- `/preview.mjpeg` the annotated preview as multipart MJPEG (404 when `preview.enabled` is false);
- `/events` a WebSocket: a `counts` snapshot (with the last events), then each event as it happens and the
  counts after it (404 when `sinks.websocket` is false). Each client reads through a bounded queue of its own
  in the worker's hub: a slow client loses its oldest events (counted in vss_stream_sink_dropped_total under
  sink "websocket") and never stalls the stream or the other clients;
- `/counts` the counts as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
from collections import deque
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from vss_streams.analytics import Event, TrackedObject
from vss_streams.hub import Subscription
from vss_streams.preview import Preview, live_counts
from vss_streams.source import Frame
from vss_streams.worker import StreamWorker

log = logging.getLogger(__name__)

EVENTS_QUEUE = 256  # events a WebSocket client may fall behind by before it loses the oldest
RECENT_EVENTS = 20  # events a client that connects gets in its snapshot
BOUNDARY = "vss-preview-frame"
_PREVIEW_KEY = web.AppKey("preview", Preview)


def _page() -> bytes:
    return resources.files("vss_streams").joinpath("live", "index.html").read_bytes()


def status_app(worker: StreamWorker, *, events_queue: int = EVENTS_QUEUE) -> web.Application:
    page = _page()
    preview = Preview(worker.spec.preview, worker.analyzer)
    recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
    sockets: set[web.WebSocketResponse] = set()

    def remember(_: Frame, __: list[TrackedObject], events: list[Event]) -> None:
        recent.extend(event.to_json() for event in events)

    worker.frame_listeners.append(remember)
    if worker.spec.preview.enabled:
        worker.frame_listeners.append(preview.on_frame)

    def counts() -> dict[str, Any]:
        state = worker.state
        return {"stream": worker.name, "ended": state.ended, "connected": state.connected,
                "previewEnabled": worker.spec.preview.enabled, "events": worker.spec.sinks.websocket,
                **live_counts(worker.analyzer)}

    async def healthz(_: web.Request) -> web.Response:
        state = worker.state
        body = {"stream": worker.name, "connected": state.connected, "lastError": state.last_error,
                "reconnects": state.reconnects, "framesDecoded": state.frames_decoded}
        return web.json_response(body, status=503 if state.ended else 200)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(worker.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def counts_json(_: web.Request) -> web.Response:
        return web.json_response(counts(), headers={"Cache-Control": "no-store"})

    async def preview_mjpeg(request: web.Request) -> web.StreamResponse:
        if not worker.spec.preview.enabled:
            raise web.HTTPNotFound(text="the preview of this stream is disabled (spec.preview.enabled)\n")
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            # Each JPEG is followed at once by the boundary and headers of the next part: a browser shows a part
            # only once the next one's headers came (Blink's multipart parser), so the image on screen is the
            # newest, not the one before it. Hence no Content-Length: it is not known that far ahead.
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode()
            await response.write(head)
            async with contextlib.aclosing(preview.watch()) as jpegs:
                async for jpeg in jpegs:
                    await response.write(jpeg.data + b"\r\n" + head)
        return response

    async def events(request: web.Request) -> web.StreamResponse:
        if not worker.spec.sinks.websocket:
            raise web.HTTPNotFound(text="events of this stream are not on a WebSocket (spec.sinks.websocket)\n")
        socket = web.WebSocketResponse(heartbeat=30.0)
        await socket.prepare(request)
        sockets.add(socket)
        # subscribed and snapshot taken with no await between: every event is either in the snapshot's counts
        # and recent events, or comes after it on the queue
        subscription = worker.hub.subscribe("websocket", events_queue)
        snapshot = {"type": "counts", **counts(), "recent": list(recent)}
        sender = asyncio.get_running_loop().create_task(_send(socket, subscription, snapshot, counts))
        try:
            async for message in socket:  # the client says nothing; this notices it close
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            sockets.discard(socket)
            worker.hub.unsubscribe(subscription)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return socket

    async def shutdown(_: web.Application) -> None:
        await preview.close()
        for socket in list(sockets):
            await socket.close(code=1001, message=b"the worker is stopping")

    app = web.Application()
    app[_PREVIEW_KEY] = preview
    app.on_shutdown.append(shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/counts", counts_json)
    app.router.add_get("/preview.mjpeg", preview_mjpeg)
    app.router.add_get("/events", events)
    return app


async def _send(socket: web.WebSocketResponse, subscription: Subscription, snapshot: dict[str, Any],
                counts: Callable[[], dict[str, Any]]) -> None:
    """The snapshot, then each event; the counts again whenever the client has caught up with the queue."""
    dumps = json.dumps
    try:
        await socket.send_str(dumps(snapshot, separators=(",", ":")))
        while (event := await subscription.get()) is not None:
            await socket.send_str(dumps({"type": "event", **event.to_json()}, separators=(",", ":")))
            if subscription.pending() == 0:
                await socket.send_str(dumps({"type": "counts", **counts()}, separators=(",", ":")))
        await socket.send_str(dumps({"type": "counts", **counts()}, separators=(",", ":")))
        await socket.send_str('{"type":"end"}')
    except ConnectionError:
        pass  # the client went away: the handler unsubscribes


def preview_of(app: web.Application) -> Preview:
    """The app's preview (tests look at how often it encoded)."""
    return app[_PREVIEW_KEY]


def pool_app(workers: Sequence[StreamWorker]) -> web.Application:
    """The HTTP side of a worker that holds several streams: each stream's own app (page, events, preview,
    counts, healthz) under `/streams/<name>/`, an index of them at `/`, `/healthz` for the pod (503 only once
    every stream has ended: one camera down must not restart the others' decoders), `/metrics` for all."""
    registry = workers[0].registry

    async def index(_: web.Request) -> web.Response:
        rows = "".join(f'<li><a href="streams/{html.escape(w.name)}/">{html.escape(w.name)}</a></li>' for w in workers)
        return web.Response(text=f"<!doctype html><title>VSS streams</title><h1>Streams</h1><ul>{rows}</ul>",
                            content_type="text/html")

    async def healthz(_: web.Request) -> web.Response:
        body = {w.name: {"connected": w.state.connected, "lastError": w.state.last_error, "ended": w.state.ended}
                for w in workers}
        return web.json_response(body, status=503 if all(w.state.ended for w in workers) else 200)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    for worker in workers:
        app.add_subapp(f"/streams/{worker.name}/", status_app(worker))
    return app


async def start_status_server(worker: StreamWorker | Sequence[StreamWorker], port: int,
                              host: str = "0.0.0.0") -> web.AppRunner:  # noqa: S104
    """Serve `status_app` (one worker) or `pool_app` (several) on host:port; the caller cleans the runner up
    (open previews and WebSockets are closed, then it waits at most 5 s for their handlers)."""
    if isinstance(worker, StreamWorker):
        app = status_app(worker)
    else:
        app = status_app(worker[0]) if len(worker) == 1 else pool_app(worker)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
