"""`vss stream FILE`: one VSSStream run here against a local `vss run` of its model (v2 gRPC), events as JSON
lines on stdout, a summary on stderr when the source ends or on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from vss_api.vssmodel import InvalidSpec
from vss_api.vssstream import VSSStream, VSSStreamSpec
from vss_streams.inference import DetectionClient
from vss_streams.sinks import attach_worker_sinks
from vss_streams.status_report import KubeTarget, StatusReporter, reading
from vss_streams.status_report import stop as stop_reporting
from vss_streams.status_server import start_status_server
from vss_streams.worker import StreamReport, StreamWorker, json_lines_sink

log = logging.getLogger(__name__)
# Where the rendered worker finds the camera's credentials (secretKeyRef env, see vss_operator.stream_render).
CREDENTIAL_ENV = ("VSS_SOURCE_USERNAME", "VSS_SOURCE_PASSWORD")


def stream_local(path: Path, grpc_target: str, *, watch: bool = False, watch_period_s: float = 2.0,
                 http_port: int | None = None,
                 report: tuple[str | None, Path | None, Path | None] | None = None,
                 report_period_s: float = 10.0) -> int:
    stream = VSSStream.from_yaml_file(path)
    name = stream.metadata.name
    target = _kube_target(stream, *report) if report is not None else None
    print(f"vss stream: {name} from {stream.spec.source.url.split('://')[0]}, model "
          f"{stream.spec.model.name} at {grpc_target}; events on stdout as JSON lines", file=sys.stderr)

    async def run() -> StreamReport:
        client = DetectionClient(grpc_target, stream.spec.model.name)
        credentials = (os.environ.get(CREDENTIAL_ENV[0], ""), os.environ.get(CREDENTIAL_ENV[1], ""))
        worker = StreamWorker(name, stream.spec, client, sinks=[json_lines_sink(sys.stdout.write)],
                              credentials=credentials)
        attach_worker_sinks(worker)  # spec.sinks' MQTT broker and webhooks, each behind a bounded queue
        watcher = asyncio.create_task(watch_file(path, worker, watch_period_s)) if watch else None
        server = await start_status_server(worker, http_port) if http_port is not None else None
        reporter = StatusReporter(target, lambda: worker.spec, lambda: reading(worker), report_period_s) \
            if target is not None else None
        reporting = asyncio.create_task(reporter.run(lambda: worker.state.connected)) if reporter else None
        if http_port is not None:
            print(f"vss stream: watch it on http://127.0.0.1:{http_port}/ (events on /events, health on /healthz, "
                  "metrics on /metrics)", file=sys.stderr)
        try:
            return await worker.run()
        finally:
            await stop_reporting(reporting)
            if reporter is not None:  # the last word: the source ended (or the worker stops)
                await reporter.final()
            if server is not None:
                await server.cleanup()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await client.close()

    try:
        finished = asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    _summary(finished)
    return 0


def _kube_target(stream: VSSStream, api: str | None, token_file: Path | None, ca_file: Path | None
                 ) -> KubeTarget:
    namespace = stream.metadata.namespace or "default"
    if api is None:
        try:
            return KubeTarget.in_cluster(namespace, stream.metadata.name)
        except RuntimeError as exc:
            raise InvalidSpec(f"--report-status: {exc}") from exc
    if token_file is None:
        raise InvalidSpec("--kube-api needs --kube-token-file")
    return KubeTarget(api, namespace, stream.metadata.name, token_file, ca_file)


def _summary(report: StreamReport) -> None:
    counts = {(line, direction.value, cls): n for (line, direction, cls), n in report.line_counts.items()}
    lags = sorted(report.lags)
    p50 = lags[len(lags) // 2] if lags else 0.0
    p95 = lags[min(len(lags) - 1, int(len(lags) * 0.95))] if lags else 0.0
    print(f"vss stream: {report.frames_inferred} frames inferred, {report.frames_dropped_model} unanswered, "
          f"lag p50 {p50 * 1000:.0f} ms p95 {p95 * 1000:.0f} ms", file=sys.stderr)
    for (line, direction, class_name), n in sorted(counts.items()):
        print(f"  {line} {direction} {class_name}: {n}", file=sys.stderr)


async def watch_file(path: Path, worker: StreamWorker, period_s: float) -> None:
    """Apply edited lines and zones from `path` (a mounted ConfigMap) without restarting decoding; any other
    change is the Deployment's to apply (its pod template changes with it, see stream_render.spec_hash)."""
    seen: bytes | None = None
    while True:
        try:
            current = await asyncio.to_thread(path.read_bytes)
            if current != seen:
                seen = current
                _apply(path, worker, (await asyncio.to_thread(VSSStream.from_yaml_file, path)).spec)
        except (OSError, InvalidSpec) as exc:
            log.warning("stream file not applied: %s", exc)
        await asyncio.sleep(period_s)


def _apply(path: Path, worker: StreamWorker, edited: VSSStreamSpec) -> None:
    if edited.analytics == worker.spec.analytics:
        return
    if edited.model_copy(update={"analytics": worker.spec.analytics}) != worker.spec:
        log.warning("%s changed beyond lines and zones: those apply when the worker restarts", path)
    worker.reconfigure(worker.spec.model_copy(update={"analytics": edited.analytics}))
    log.info("lines and zones of %s applied: %d lines, %d zones", path, len(edited.analytics.lines),
             len(edited.analytics.zones))
