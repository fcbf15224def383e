"""`vss stream FILE`: one VSSStream run here against a local `vss run` of its model (v2 gRPC), events as JSON
lines on stdout, a summary on stderr when the source ends or on Ctrl-C."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

from vss_api.vssstream import VSSStream
from vss_streams.analytics import EventKind
from vss_streams.inference import DetectionClient
from vss_streams.worker import StreamReport, StreamWorker, json_lines_sink


def stream_local(path: Path, grpc_target: str) -> int:
    stream = VSSStream.from_yaml_file(path)
    name = stream.metadata.name
    print(f"vss stream: {name} from {stream.spec.source.url.split('://')[0]}, model "
          f"{stream.spec.model.name} at {grpc_target}; events on stdout as JSON lines", file=sys.stderr)

    async def run() -> StreamReport:
        client = DetectionClient(grpc_target, stream.spec.model.name)
        worker = StreamWorker(name, stream.spec, client, sinks=[json_lines_sink(sys.stdout.write)])
        try:
            return await worker.run()
        finally:
            await client.close()

    try:
        report = asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    _summary(report)
    return 0


def _summary(report: StreamReport) -> None:
    counts = Counter((e.name, e.direction.value if e.direction else e.kind.value, e.class_name)
                     for e in report.events if e.kind is EventKind.LINE_CROSSED)
    lags = sorted(report.lags)
    p50 = lags[len(lags) // 2] if lags else 0.0
    p95 = lags[min(len(lags) - 1, int(len(lags) * 0.95))] if lags else 0.0
    print(f"vss stream: {report.frames_inferred} frames inferred, {report.frames_dropped_model} unanswered, "
          f"lag p50 {p50 * 1000:.0f} ms p95 {p95 * 1000:.0f} ms", file=sys.stderr)
    for (line, direction, class_name), n in sorted(counts.items()):
        print(f"  {line} {direction} {class_name}: {n}", file=sys.stderr)
