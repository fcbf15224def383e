"""The worker's live page in a real browser: a StreamWorker on the generated crossing clip, its every sampled frame
inferred by the shipped detector of a real `vss run examples/detection.yaml`, its status server on a free port,
and Debian's Chromium (headless) on `/`, driven over the DevTools protocol. While the stream runs, the page's
JS renders the counts and events it gets from the /events WebSocket and shows the annotated MJPEG preview; once
the source ends, the page's counts equal the clip's ground truth. The screenshot taken mid-stream is kept in
build/live-page.png (docs/images/live-page.png is a copy of it). With the preview and the event WebSocket turned
off, the page says the preview is off and polls /counts instead."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from numpy.typing import NDArray

from tests.e2e.serving import REPO, Served, free_port
from vss_api.vssstream import Direction, VSSStreamSpec
from vss_models.clips import crossing_clip, true_crossings
from vss_streams.inference import DetectionClient
from vss_streams.status_server import preview_of, start_status_server
from vss_streams.tracking import FrameDetections
from vss_streams.worker import StreamReport, StreamWorker

SCREENSHOT = REPO / "build" / "live-page.png"
ROAD = ((0.0, 0.55), (1.0, 0.55))
FPS = 5.0
# The clip is a recording, inferred as fast as the model answers; a camera gives a frame each 1/FPS s. Each
# answer is held back to that pace, so the page watches a stream that lasts 20 s, like the clip.
PACE_S = 1.0 / FPS


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("Debian's chromium is not installed (the live page is tested in it): `make system` installs it, "
                    "or apt-get install --no-install-recommends chromium")
    return found


class PacedClient(DetectionClient):
    """The real model, answering no faster than a camera would send frames."""

    async def detect(self, frames: Sequence[NDArray[np.uint8]]) -> tuple[list[FrameDetections], list[list[str]]]:
        started = time.monotonic()
        answer = await super().detect(frames)
        await asyncio.sleep(max(0.0, started + PACE_S - time.monotonic()))
        return answer


class DevTools:
    """Just enough of the Chrome DevTools protocol: evaluate JS in the page, take a screenshot."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket, self._id = socket, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self._socket.send_json({"id": self._id, "method": method, "params": params})
        while True:
            message = json.loads((await self._socket.receive(timeout=30)).data)
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def browser(url: str, profile: Path) -> AsyncIterator[DevTools]:
    process = await asyncio.create_subprocess_exec(
        chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
        "--hide-scrollbars", "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", url, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    drain: asyncio.Task[bytes] | None = None
    try:
        assert process.stderr is not None
        seen = b""
        async with asyncio.timeout(60):
            while (match := re.search(rb"DevTools listening on ws://([^/\s]+)/", seen)) is None:
                line = await process.stderr.readline()
                if not line:
                    raise RuntimeError(f"chromium exited ({await process.wait()}):\n{seen.decode(errors='replace')}")
                seen += line
        devtools_at = match.group(1).decode()
        # chromium goes on logging to stderr: drained, or a full pipe would block it
        drain = asyncio.create_task(process.stderr.read())
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    async with session.get(f"http://{devtools_at}/json/list") as reply:
                        pages = [t for t in await reply.json() if t["type"] == "page"]
                    if pages:
                        break
                    await asyncio.sleep(0.1)
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                yield DevTools(socket)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            await drain


# What the page shows, read from its DOM (the rows the page's JS renders from the WebSocket).
PAGE_STATE = """(() => {
  const road = document.querySelector('#lines tr[data-line="road"]');
  const kerb = document.querySelector('#zones tr[data-zone="kerb"]');
  const n = (row, which) => row ? Number(row.querySelector(`[data-count="${which}"]`).firstChild.textContent) : -1;
  const img = document.getElementById('preview');
  return {connection: document.body?.dataset.connection || '', roadIn: n(road, 'in'), roadOut: n(road, 'out'),
          kerb: n(kerb, 'inside'), events: [...document.querySelectorAll('#events tr.event')].map(
            tr => [...tr.cells].map(td => td.textContent)),
          previewWidth: img ? img.naturalWidth : 0, stream: document.getElementById('stream')?.textContent};
})()"""


async def poll(devtools: DevTools, done: Any, deadline_s: float, what: str) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        state: dict[str, Any] = await devtools.evaluate(PAGE_STATE)
        if done(state):
            return state
        if time.monotonic() > end:
            raise AssertionError(f"the page did not show {what} within {deadline_s}s; it shows {state}")
        await asyncio.sleep(0.1)


def test_the_live_page_renders_counts_events_and_the_annotated_preview_in_chromium(
        shipped_detector: Served, clip: Path, tmp_path: Path) -> None:
    chromium()
    spec = VSSStreamSpec.model_validate({
        "source": {"url": f"file://{clip}"}, "model": {"name": "detector"},
        "sampling": {"fps": FPS, "mode": "exhaustive"},
        "analytics": {"lines": [{"name": "road", "from": list(ROAD[0]), "to": list(ROAD[1])}],
                      "zones": [{"name": "kerb", "polygon": [[0.0, 0.8], [0.35, 0.8], [0.35, 1.0], [0.0, 1.0]],
                                 "dwellSeconds": 2}]},
        "preview": {"fps": 5, "width": 960}})

    async def run() -> tuple[dict[str, Any], dict[str, Any], StreamReport, int, bytes]:
        client = PacedClient(shipped_detector.grpc_url, "detector", timeout_s=30.0)
        worker = StreamWorker("crossing", spec, client)
        port = free_port()
        server = await start_status_server(worker, port, host="127.0.0.1")
        preview = preview_of(server.app)
        try:
            async with browser(f"http://127.0.0.1:{port}/", tmp_path / "chromium") as devtools:
                await poll(devtools, lambda s: s["connection"] == "live" and s["roadIn"] == 0, 30,
                           "its WebSocket connected and the road counted 0")
                running = asyncio.create_task(worker.run())
                live = await poll(devtools, lambda s: s["roadIn"] >= 2 and len(s["events"]) >= 3
                                  and s["previewWidth"] == 960, 120,
                                  "2 crossings in, 3 events and the 960-pixel preview")
                assert not running.done(), "the stream ended before the page showed its events: they were not live"
                # the screenshot once the preview has caught up with the newest event on the page (it lags by up
                # to 1/preview.fps), so that the image and the tables tell the same story
                newest = max(e.frame for e in worker.report.events)
                async with asyncio.timeout(30):
                    while (jpeg := preview.latest) is None or jpeg.frame < newest:  # noqa: ASYNC110 (polled)
                        await asyncio.sleep(0.05)
                await poll(devtools, lambda s: True, 1, "anything")  # one round trip more: the part is drawn
                shot = await devtools.call("Page.captureScreenshot", format="png")
                report = await asyncio.wait_for(running, 120)
                ended = await poll(devtools, lambda s: s["connection"] == "ended", 30, "the stream ended")
                inside = sum(n for (zone, _), n in worker.analyzer.occupancy().items() if zone == "kerb")
                return live, ended, report, inside, base64.b64decode(shot["data"])
        finally:
            await server.cleanup()
            await client.close()

    live, ended, report, inside, png = asyncio.run(asyncio.wait_for(run(), 300))

    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert live["stream"] == "crossing"
    truth = true_crossings(crossing_clip(), *ROAD)
    expected_in = sum(n for (direction, _), n in truth.items() if direction == "in")
    expected_out = sum(n for (direction, _), n in truth.items() if direction == "out")
    assert report.frames_dropped_model == 0 and report.frames_inferred == 100
    assert (ended["roadIn"], ended["roadOut"]) == (expected_in, expected_out)
    assert ended["kerb"] == inside  # who the worker still sees in the kerb when the clip ends
    # the newest event first, each row as the page wrote it; the last 20 at most
    assert len(ended["events"]) == min(20, report.events_total)
    last = report.events[-1]
    assert ended["events"][0][2] == last.name and ended["events"][0][3] == f"{last.class_name} #{last.track_id}"
    assert any(row[1] == "crossed in" and row[2] == "road" for row in live["events"])


def test_with_the_preview_and_the_event_websocket_off_the_page_says_so_and_polls_the_counts(tmp_path: Path) -> None:
    chromium()
    spec = VSSStreamSpec.model_validate({
        "source": {"url": "file:///clips/none.mp4"}, "model": {"name": "detector"},
        "analytics": {"lines": [{"name": "road", "from": list(ROAD[0]), "to": list(ROAD[1])}]},
        "sinks": {"websocket": False}, "preview": {"enabled": False}})
    state = """(() => ({connection: document.body?.dataset.connection || '',
        previewOff: document.getElementById('preview-off')?.hidden === false,
        road: document.querySelector('#lines tr[data-line="road"] [data-count="in"]')?.firstChild.textContent}))()"""

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        client = DetectionClient("127.0.0.1:9", "detector")
        worker = StreamWorker("quiet", spec, client)  # not run: the counts are set by hand below
        port = free_port()
        server = await start_status_server(worker, port, host="127.0.0.1")
        try:
            async with browser(f"http://127.0.0.1:{port}/", tmp_path / "chromium") as devtools:
                async def shows(done: Any, what: str) -> dict[str, Any]:
                    end = time.monotonic() + 30
                    while not done(page := await devtools.evaluate(state)):
                        assert time.monotonic() < end, f"the page did not show {what}; it shows {page}"
                        await asyncio.sleep(0.1)
                    return dict(page)

                before = await shows(lambda p: p["previewOff"] and p.get("road") == "0"
                                     and p["connection"] == "live", "the preview off and the road at 0")
                worker.analyzer.line_counts[("road", Direction.IN, "person")] = 4
                after = await shows(lambda p: p.get("road") == "4", "the road at 4, polled")
                return before, after
        finally:
            await server.cleanup()
            await client.close()

    before, after = asyncio.run(asyncio.wait_for(run(), 120))

    assert before["connection"] == after["connection"] == "live"
