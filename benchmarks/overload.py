"""Overload (issue 15): a VSSModel served as `vss run` serves it, its capacity measured closed-loop, then offered
`--multiplier` (4x) that rate open-loop, first with no deadline of the client's own (the spec's defaults: the
transformer's `maxConcurrency`, the predictor's bounded `maxQueueSize`, `requestTimeoutMs`), then with a short
v2 `timeout` parameter on every request. Each phase prints the status codes seen (REST; gRPC codes with
`--protocol grpc`), how fast refusals came back, how many 503s carried `Retry-After`, and each process's resident
memory before, at its peak (sampled every 0.2 s) and after; then a recovery check: sequential requests right after
the overload must all succeed.

    python benchmarks/overload.py                                   # classifier, 4x, 20 s a phase, REST
    python benchmarks/overload.py --spec examples/detection.yaml --protocol grpc --seconds 30

What a bounded server should show: only 200, 503 (refused before any work, at once) and 504 (the deadline
passed; work not yet started is dropped), no 500, no hang; memory flat-topped by the limits; the next request
after the storm served. Exits 1 when a request got anything else, hung past the phase's bound, or the recovery
failed. Results: benchmarks/results/overload-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.frames import jpeg_frames
from benchmarks.loadgen import TargetSpec, bytes_tensor
from benchmarks.results import percentile, to_text
from benchmarks.servers import REPO, Stack, proc_memory_kb, start_vss_run

RESULTS = REPO / "benchmarks" / "results"
SAMPLE_EVERY_S = 0.2
# What a bounded server may answer under overload: served, refused before any work, or past its deadline.
ANSWERS = {"rest": {"200", "503", "504"}, "grpc": {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}}
HANG_S = 60.0  # a request still unanswered this long after it was sent counts as hung


@dataclass
class Outcome:
    status: str  # "200", "503", ... or a gRPC code name, or "hang" / "error: ..."
    latency_s: float
    retry_after: bool = False
    detail: str = ""  # the gRPC details of a refusal, for the report


@dataclass
class MemorySampler:
    """VmRSS of each process every SAMPLE_EVERY_S on a thread of its own, until stopped."""

    roles: dict[str, int]
    samples: list[dict[str, float]] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def rss_mb(self) -> dict[str, float]:
        return {role: proc_memory_kb(pid).get("VmRSS", 0) / 1024 for role, pid in self.roles.items()}

    def start(self) -> None:
        def loop() -> None:
            while not self.stop_event.wait(SAMPLE_EVERY_S):
                self.samples.append(self.rss_mb())
        self.samples.append(self.rss_mb())
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def stop(self) -> dict[str, dict[str, float]]:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join()
        self.samples.append(self.rss_mb())
        return {role: {"start_mb": round(self.samples[0][role], 1),
                       "peak_mb": round(max(s[role] for s in self.samples), 1),
                       "end_mb": round(self.samples[-1][role], 1)} for role in self.roles}


def rest_body(model_outputs: tuple[str, ...], jpeg: bytes, timeout_us: int | None) -> tuple[bytes, dict[str, str]]:
    data = bytes_tensor([jpeg])
    header: dict[str, Any] = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in model_outputs]}
    if timeout_us is not None:
        header["parameters"] = {"timeout": timeout_us}
    raw = json.dumps(header).encode()
    return raw + data, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(raw))}


def v2_protos() -> tuple[Any, Any]:
    """KServe's v2 gRPC messages and stub. Importing them runs KServe's argument parser on `sys.argv` (this
    script's `--protocol grpc` is not one of its choices), so they are imported with the command line hidden;
    tritonclient's copy of the same protos would clash with KServe's in a process that loads both (the tests')."""
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
    finally:
        sys.argv = saved
    return pb, GRPCInferenceServiceStub


class Client:
    """One asyncio client of the served model over REST (aiohttp, binary tensors) or gRPC (grpc.aio); `infer` never
    raises: every answer, refusal, failure or hang becomes an `Outcome`."""

    def __init__(self, target: TargetSpec, frames: list[bytes]) -> None:
        self.target = target
        self.frames = frames

    async def __aenter__(self) -> Client:
        if self.target.target == "rest":
            import aiohttp

            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512),
                                                 timeout=aiohttp.ClientTimeout(total=HANG_S))
            self.url = f"http://{self.target.url}/v2/models/{self.target.model}/infer"
        else:
            import grpc

            _, GRPCInferenceServiceStub = v2_protos()  # noqa: N806 - a class

            self.channel = grpc.aio.insecure_channel(self.target.url,
                                                     options=[("grpc.max_receive_message_length", -1)])
            self.stub = GRPCInferenceServiceStub(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.target.target == "rest":
            await self.session.close()
        else:
            await self.channel.close()

    async def infer(self, index: int, timeout_us: int | None = None) -> Outcome:
        frame = self.frames[index % len(self.frames)]
        began = time.monotonic()
        if self.target.target == "rest":
            import aiohttp

            body, headers = rest_body(self.target.outputs, frame, timeout_us)
            try:
                async with self.session.post(self.url, data=body, headers=headers) as reply:
                    await reply.read()
                    return Outcome(str(reply.status), time.monotonic() - began, "Retry-After" in reply.headers)
            except TimeoutError:
                return Outcome("hang", time.monotonic() - began)
            except aiohttp.ClientError as exc:
                return Outcome(f"error: {type(exc).__name__}", time.monotonic() - began)
        import grpc
        pb, _ = v2_protos()

        request = pb.ModelInferRequest(model_name=self.target.model, raw_input_contents=[bytes_tensor([frame])])
        request.inputs.add(name="image", datatype="BYTES", shape=[1])
        if timeout_us is not None:
            request.parameters["timeout"].int64_param = timeout_us
        try:
            await self.stub.ModelInfer(request, timeout=HANG_S)
            return Outcome("OK", time.monotonic() - began)
        except grpc.aio.AioRpcError as exc:
            hung = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - began >= HANG_S - 1
            return Outcome("hang" if hung else exc.code().name, time.monotonic() - began,
                           detail=(exc.details() or "")[:200])


async def closed_loop(client: Client, *, concurrency: int, seconds: float, warmup: int = 16) -> tuple[float, int]:
    """Requests/s answered in full by `concurrency` clients sending back to back for `seconds` (after `warmup`
    requests), and how many failed."""
    for index in range(warmup):
        await client.infer(index)
    done = failed = 0
    end = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal done, failed
        index = offset
        while time.monotonic() < end:
            outcome = await client.infer(index)
            index += concurrency
            if outcome.status in ("200", "OK"):
                done += 1
            else:
                failed += 1

    began = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.monotonic() - began), failed


async def open_loop(client: Client, *, rate: float, seconds: float, timeout_us: int | None) -> list[Outcome]:
    """`rate` requests a second for `seconds`, each sent when due whether or not earlier ones were answered."""
    tasks: list[asyncio.Task[Outcome]] = []
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) < start + seconds:
        due = start + sent / rate
        if due <= now:
            tasks.append(asyncio.ensure_future(client.infer(sent, timeout_us)))
            sent += 1
            continue
        await asyncio.sleep(due - now)
    return list(await asyncio.gather(*tasks))


async def recovery(client: Client, requests: int = 20) -> list[Outcome]:
    """Sequential requests right after a storm: each must be answered in full."""
    return [await client.infer(index) for index in range(requests)]


def summarize(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    by_status: dict[str, list[float]] = {}
    for outcome in outcomes:
        by_status.setdefault(outcome.status, []).append(outcome.latency_s)
    refused = [o for o in outcomes if o.status in ("503", "UNAVAILABLE")]
    return {
        "offered": len(outcomes), "offered_rps": round(len(outcomes) / seconds, 1),
        "statuses": dict(Counter(o.status for o in outcomes).most_common()),
        "latency_ms": {status: {"p50": round(percentile(lat, 50) * 1e3, 1),
                                "p99": round(percentile(lat, 99) * 1e3, 1),
                                "max": round(max(lat) * 1e3, 1)} for status, lat in by_status.items()},
        "retry_after_on_503": f"{sum(o.retry_after for o in refused)}/{len(refused)}" if refused and
        outcomes[0].status.isdigit() else "n/a",
    }


async def run_phases(args: argparse.Namespace, target: TargetSpec, frames: list[bytes],
                     roles: dict[str, int]) -> tuple[float, dict[str, dict[str, Any]], bool]:
    phases: dict[str, dict[str, Any]] = {}
    allowed = ANSWERS[args.protocol]
    async with Client(target, frames) as client:
        capacity, failed = await closed_loop(client, concurrency=args.concurrency, seconds=args.capacity_seconds)
        rate = args.multiplier * capacity
        print(f"capacity of {target.model} over {args.protocol}: {capacity:.1f} req/s ({args.concurrency} "
              f"closed-loop clients, failed {failed}); offering {rate:.0f} req/s ({args.multiplier:g}x) for "
              f"{args.seconds:g} s a phase", flush=True)
        for phase, timeout_us in (("spec defaults", None), (f"timeout {args.timeout_ms} ms", args.timeout_ms * 1000)):
            sampler = MemorySampler(roles)
            sampler.start()
            outcomes = await open_loop(client, rate=rate, seconds=args.seconds, timeout_us=timeout_us)
            memory = sampler.stop()
            summary = summarize(outcomes, args.seconds)
            summary["memory_mb"] = memory
            phases[phase] = summary
            unexpected = {s: n for s, n in summary["statuses"].items() if s not in allowed}
            print(f"\n{phase}: offered {summary['offered']} ({summary['offered_rps']} req/s); statuses "
                  f"{summary['statuses']}; Retry-After on 503s {summary['retry_after_on_503']}"
                  + (f"; UNEXPECTED {unexpected}" if unexpected else ""))
            print(to_text([{"status": s, **v} for s, v in summary["latency_ms"].items()],
                          [("status", "status"), ("p50", "p50 ms"), ("p99", "p99 ms"), ("max", "max ms")]))
            print(to_text([{"process": r, **v} for r, v in memory.items()],
                          [("process", "process"), ("start_mb", "RSS before MB"), ("peak_mb", "RSS peak MB"),
                           ("end_mb", "RSS after MB")]))
        after = await recovery(client)
    others = [o.status for o in after if o.status not in ("200", "OK")]
    served = len(after) - len(others)
    print(f"\nrecovery: {served}/{len(after)} sequential requests right after the overload were served"
          + (f" (the others: {others})" if others else ""))
    return capacity, phases, served == len(after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "classification.yaml")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument("--multiplier", type=float, default=4.0, help="offered load as a multiple of capacity")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each overload phase")
    parser.add_argument("--timeout_ms", type=int, default=250, help="the v2 `timeout` of the second phase")
    parser.add_argument("--capacity_seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients for the capacity")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import yaml

    name = yaml.safe_load(args.spec.read_text())["metadata"]["name"]
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "overload-logs"
    logs.mkdir(exist_ok=True)
    frames = jpeg_frames(8)
    stack: Stack = start_vss_run(args.spec, name, logs)
    try:
        target = TargetSpec(args.protocol, stack.endpoints[args.protocol], name, ("labels",))
        capacity, phases, recovered = asyncio.run(run_phases(args, target, frames, dict(stack.roles)))
    finally:
        stack.stop()
    allowed = ANSWERS[args.protocol]
    ok = recovered and all(set(p["statuses"]) <= allowed for p in phases.values())
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.out / f"overload-{stamp}.json"
    path.write_text(json.dumps({"model": name, "protocol": args.protocol, "capacity_rps": capacity,
                                "multiplier": args.multiplier, "phases": phases}, indent=1))
    print(f"results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
