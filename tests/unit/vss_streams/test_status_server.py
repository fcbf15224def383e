"""The worker's /healthz and /metrics over real HTTP on loopback: healthy while the stream runs, 503 once its
source has ended, and the stream's counters in Prometheus' text format. The worker is not run: the test sets
its state, so the model is never called."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

from vss_api.vssstream import VSSStreamSpec
from vss_streams.inference import DetectionClient
from vss_streams.status_server import start_status_server
from vss_streams.worker import StreamWorker


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
