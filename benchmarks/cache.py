"""The result cache (`transformer.cache`) on repeated frames: the same N camera frames sent R times each, one at a
time over gRPC, to the shipped model served without the cache and with it (a redis-server started here, on
loopback): both served at once, each request sent to one and then the other (the order alternating), so both see
the same machine at the same moment. Prints the hit ratio the transformer counted and the client's
latency, p50/p95, with the ratio to the run without the cache; with the cache also the first sight of each frame
(a miss: key, lookup, store on top of the usual path) apart from its repeats (hits).

    python -m benchmarks.cache [--model models/artifacts/detector.onnx] [--frames 8] [--repeats 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import yaml

from benchmarks.frames import jpeg_frames
from benchmarks.results import percentile, to_text
from benchmarks.servers import REPO, free_port, start_vss_run, vssmodel_yaml

NAME = "cache-bench"


def _metric(rest: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{rest}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def _once(client: grpcclient.InferenceServerClient, data: bytes) -> float:
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object))
    started = time.perf_counter()
    client.infer(NAME, [tensor])
    return time.perf_counter() - started


def _send(targets: dict[str, str], frames: Sequence[bytes], repeats: int) -> dict[str, list[tuple[bool, float]]]:
    """(repeat, seconds) per request and target: every frame once, then again, `repeats` times over; each request
    to every target in turn, the first target alternating."""
    clients = {label: grpcclient.InferenceServerClient(url) for label, url in targets.items()}
    timings: dict[str, list[tuple[bool, float]]] = {label: [] for label in targets}
    order = list(targets)
    for round_ in range(repeats):
        for data in frames:
            order.reverse()
            for label in order:
                timings[label].append((round_ > 0, _once(clients[label], data)))
    for client in clients.values():
        client.close()
    return timings


def _redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (the Debian package redis-server)")
    with log.open("wb") as sink:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], stdout=sink, stderr=subprocess.STDOUT)
    import redis

    end = time.monotonic() + 20
    while True:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return process
        except redis.RedisError:
            if time.monotonic() > end:
                process.kill()
                raise
            time.sleep(0.1)


def _row(label: str, timings: Sequence[float], baseline: Sequence[float] | None, hit_ratio: str) -> dict[str, object]:
    ms = [t * 1000 for t in timings]
    p50, p95 = percentile(ms, 50), percentile(ms, 95)
    row: dict[str, object] = {"run": label, "requests": len(ms), "hit ratio": hit_ratio, "p50 ms": round(p50, 2),
                              "p95 ms": round(p95, 2)}
    if baseline is not None:
        base = [t * 1000 for t in baseline]
        row["p50 / no cache"] = round(p50 / percentile(base, 50), 3)
        row["p95 / no cache"] = round(p95 / percentile(base, 95), 3)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "artifacts" / "detector.onnx")
    parser.add_argument("--task", choices=("detection", "classification"), default="detection")
    parser.add_argument("--frames", type=int, default=8, help="distinct frames")
    parser.add_argument("--repeats", type=int, default=8, help="times each frame is sent")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"{args.model} not found: build the shipped models with `vss models build`")
    frames = jpeg_frames(args.frames)
    work = Path(tempfile.mkdtemp(prefix="vss-cache-bench-"))
    port = free_port()
    redis_process = _redis(port, work / "redis.log")
    stacks = []
    try:
        for label, cached in (("no cache", False), ("cache", True)):
            doc = yaml.safe_load(vssmodel_yaml(NAME, args.task, args.model.resolve()))
            if cached:
                doc["spec"]["transformer"]["cache"] = {"secretRef": {"name": "redis"}}
                os.environ["VSS_CACHE_URL"] = f"redis://127.0.0.1:{port}/0"
            spec_path = work / f"{label.replace(' ', '-')}.yaml"
            spec_path.write_text(yaml.safe_dump(doc))
            stacks.append(start_vss_run(spec_path, NAME, work))
        targets = {"no cache": stacks[0].endpoints["grpc"], "cache": stacks[1].endpoints["grpc"]}
        _send(targets, jpeg_frames(1, seed=1000), 3)  # warm both paths, with a frame not sent below
        rest = stacks[1].endpoints["rest"]
        before = (_metric(rest, "result_cache_hits_total"), _metric(rest, "result_cache_misses_total"))
        results = _send(targets, frames, args.repeats)
        hits = _metric(rest, "result_cache_hits_total") - before[0]
        misses = _metric(rest, "result_cache_misses_total") - before[1]
    finally:
        for stack in stacks:
            stack.stop()
        redis_process.terminate()
        redis_process.wait(timeout=10)
    base = [t for _, t in results["no cache"]]
    cached_timings = results["cache"]
    rows = [_row("no cache", base, None, "-"),
            _row("cache", [t for _, t in cached_timings], base, f"{hits / max(1.0, hits + misses):.3f}"),
            _row("cache, first sight (miss)", [t for again, t in cached_timings if not again], base, "0"),
            _row("cache, repeats (hit)", [t for again, t in cached_timings if again], base, "")]
    columns = [(k, k) for k in rows[1]]
    print(f"{args.task} ({args.model.name}), {args.frames} frames x {args.repeats}, one request at a time over gRPC "
          f"({sys.platform}, {os.cpu_count()} CPUs); hits {hits:.0f}, misses {misses:.0f} (transformer's counters)")
    print(to_text(rows, columns))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
