"""The worker's HTTP side: `/healthz` for the kubelet's probes (200 while the stream runs, with what the source
is doing; 503 once it has ended) and `/metrics` for Prometheus."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from vss_streams.worker import StreamWorker


def status_app(worker: StreamWorker) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        state = worker.state
        body = {"stream": worker.name, "connected": state.connected, "lastError": state.last_error,
                "reconnects": state.reconnects, "framesDecoded": state.frames_decoded}
        return web.json_response(body, status=503 if state.ended else 200)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(worker.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_status_server(worker: StreamWorker, port: int, host: str = "0.0.0.0") -> web.AppRunner:  # noqa: S104
    """Serve `status_app` on host:port; the caller cleans the runner up."""
    runner = web.AppRunner(status_app(worker), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
