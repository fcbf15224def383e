"""`vss stream FILE...`: VSSStreams run here against a local `vss run` of their model (v2 gRPC), events as JSON
lines on stdout, a summary on stderr when the sources end or on Ctrl-C. Several files: one worker process holds
them all (one decoder thread each, one gRPC channel per model endpoint, `--batch` for one FrameBatcher)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from vss_api.vssmodel import InvalidSpec
from vss_api.vssstream import VSSStream, VSSStreamSpec
from vss_streams.inference import DetectionClient, Detector, FrameBatcher
from vss_streams.sinks import attach_worker_sinks
from vss_streams.status_report import KubeTarget, Reading, StatusReporter, reading
from vss_streams.status_report import stop as stop_reporting
from vss_streams.status_server import start_status_server
from vss_streams.worker import StreamReport, StreamWorker, json_lines_sink

log = logging.getLogger(__name__)
# Where the rendered worker finds the camera's credentials (secretKeyRef env, see vss_operator.stream_render).
CREDENTIAL_ENV = ("VSS_SOURCE_USERNAME", "VSS_SOURCE_PASSWORD")


def credential_env(stream: str, several: bool) -> tuple[str, str]:
    """Where a worker finds a camera's credentials: VSS_SOURCE_USERNAME/PASSWORD, suffixed with the stream's
    name (upper case, `-` as `_`) when one worker holds several streams."""
    if not several:
        return CREDENTIAL_ENV
    suffix = "_" + stream.upper().replace("-", "_")
    return (CREDENTIAL_ENV[0] + suffix, CREDENTIAL_ENV[1] + suffix)


def stream_local(paths: Path | Sequence[Path], grpc_targets: str | Sequence[str], *, watch: bool = False,
                 watch_period_s: float = 2.0, http_port: int | None = None,
                 report: tuple[str | None, Path | None, Path | None] | None = None,
                 report_period_s: float = 10.0, batch: bool = False) -> int:
    """Run the VSSStreams of PATHS in this process, each against its model's v2 gRPC endpoint (one for all, or
    one per file). With `batch`, the frames of the streams that call one endpoint go through one FrameBatcher."""
    files = [paths] if isinstance(paths, Path) else list(paths)
    targets = [grpc_targets] if isinstance(grpc_targets, str) else list(grpc_targets)
    if len(targets) == 1:
        targets = targets * len(files)
    if len(targets) != len(files):
        raise InvalidSpec(f"give one --model-grpc for all {len(files)} streams or one per FILE, not {len(targets)}")
    streams = [VSSStream.from_yaml_file(path) for path in files]
    names = [stream.metadata.name for stream in streams]
    if len(set(names)) != len(names):
        raise InvalidSpec(f"two streams of one worker have the same name: {names}")
    kube = [_kube_target(stream, *report) if report is not None else None for stream in streams]
    for stream, target in zip(streams, targets, strict=True):
        print(f"vss stream: {stream.metadata.name} from {stream.spec.source.url.split('://')[0]}, model "
              f"{stream.spec.model.name} at {target}; events on stdout as JSON lines", file=sys.stderr)

    async def run() -> list[StreamReport]:
        registry = CollectorRegistry()
        clients: dict[tuple[str, str], DetectionClient] = {}
        detectors: dict[tuple[str, str], Detector] = {}
        workers = []
        for stream, target in zip(streams, targets, strict=True):
            key = (target, stream.spec.model.name)
            if key not in clients:
                clients[key] = DetectionClient(target, stream.spec.model.name)
                detectors[key] = FrameBatcher(clients[key]) if batch and len(streams) > 1 else clients[key]
            user_env, password_env = credential_env(stream.metadata.name, len(streams) > 1)
            workers.append(StreamWorker(stream.metadata.name, stream.spec, detectors[key],
                                        sinks=[json_lines_sink(sys.stdout.write)], registry=registry,
                                        credentials=(os.environ.get(user_env, ""), os.environ.get(password_env, ""))))
        tasks: list[asyncio.Task[None]] = []
        reporters: list[StatusReporter] = []
        for path, worker, target_kube in zip(files, workers, kube, strict=True):
            attach_worker_sinks(worker)  # spec.sinks' MQTT broker and webhooks, each behind a bounded queue
            if watch:
                tasks.append(asyncio.create_task(watch_file(path, worker, watch_period_s)))
            if target_kube is not None:
                reporter = StatusReporter(target_kube, _spec_of(worker), _reading_of(worker), report_period_s)
                reporters.append(reporter)
                tasks.append(asyncio.create_task(reporter.run(_connected_of(worker))))
        server = await start_status_server(workers, http_port) if http_port is not None else None
        if http_port is not None:
            where = "" if len(workers) == 1 else " (each stream under /streams/NAME/)"
            print(f"vss stream: watch it on http://127.0.0.1:{http_port}/{where} (events on /events, health on "
                  "/healthz, metrics on /metrics)", file=sys.stderr)
        try:
            return list(await asyncio.gather(*(worker.run() for worker in workers)))
        finally:
            for task in tasks:
                await stop_reporting(task)
            for reporter in reporters:  # the last word: the source ended (or the worker stops)
                await reporter.final()
            if server is not None:
                await server.cleanup()
            for client in clients.values():
                await client.close()

    try:
        finished = asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    for name, report_of_stream in zip(names, finished, strict=True):
        _summary(report_of_stream, name if len(names) > 1 else None)
    return 0


def _spec_of(worker: StreamWorker) -> Callable[[], VSSStreamSpec]:
    return lambda: worker.spec


def _reading_of(worker: StreamWorker) -> Callable[[], Reading]:
    return lambda: reading(worker)


def _connected_of(worker: StreamWorker) -> Callable[[], bool]:
    return lambda: worker.state.connected


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


def _summary(report: StreamReport, name: str | None = None) -> None:
    counts = {(line, direction.value, cls): n for (line, direction, cls), n in report.line_counts.items()}
    lags = sorted(report.lags)
    p50 = lags[len(lags) // 2] if lags else 0.0
    p95 = lags[min(len(lags) - 1, int(len(lags) * 0.95))] if lags else 0.0
    prefix = f"{name}: " if name else ""
    print(f"vss stream: {prefix}{report.frames_inferred} frames inferred, {report.frames_dropped_model} unanswered, "
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
