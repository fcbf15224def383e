"""Soak (issue 15): a VSSModel served as `vss run` serves it (one process on the CPU, else the predictor and the
transformer), its capacity measured closed-loop, then held at a fraction of it (80 % by default) open-loop for
`--minutes`. Every 10 s the resident memory (VmRSS) of each process is read; each minute's latency p50/p99 and
errors are printed as a table, then each process's RSS at the start and end of the soak and their ratio. Exits 1 when a
process's RSS grew more than `--max_growth` (10 %), or when a request failed.

    python benchmarks/soak.py                          # examples/classification.yaml, 10 minutes, v2 REST
    python benchmarks/soak.py --minutes 1 --protocol grpc
    python benchmarks/soak.py --spec examples/detection.yaml --minutes 30

Latency is measured from the moment a request was due, not from when a worker was free to send it, so a
server that falls behind shows it in p99 instead of slowing the load down. Results: benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.frames import jpeg_frames
from benchmarks.loadgen import SENDERS, MakeSender, TargetSpec, run_load
from benchmarks.results import percentile, to_text
from benchmarks.servers import REPO, Stack, proc_memory_kb, start_vss_run

RESULTS = REPO / "benchmarks" / "results"
RSS_EVERY_S = 10.0


@dataclass
class Minute:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


@dataclass
class Soak:
    """Open-loop load at `rate` requests/s for `seconds`: a clock thread puts each request's due time on a queue,
    `workers` threads (each with its own client) send them."""

    make_sender: MakeSender
    frames: list[bytes]
    rate: float
    seconds: float
    workers: int
    minutes: dict[int, Minute] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, on_tick: Any) -> None:
        due: queue.Queue[float | None] = queue.Queue()
        start = time.monotonic()
        threads = [threading.Thread(target=self._worker, args=(due, start), daemon=True) for _ in range(self.workers)]
        for thread in threads:
            thread.start()
        sent = 0
        end = start + self.seconds
        while True:
            now = time.monotonic()
            if now >= end:
                break
            next_due = start + sent / self.rate
            if next_due <= now:
                due.put(next_due)
                sent += 1
                continue
            on_tick(now - start)
            time.sleep(min(next_due - now, 0.05))
        for _ in threads:
            due.put(None)
        for thread in threads:
            thread.join(timeout=330)

    def _worker(self, due: queue.Queue[float | None], start: float) -> None:
        send = self.make_sender()
        index = 0
        while (moment := due.get()) is not None:
            index += 1
            error = ""
            try:
                send(self.frames[index % len(self.frames)])
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            latency = time.monotonic() - moment
            with self.lock:
                minute = self.minutes.setdefault(int((moment - start) // 60), Minute())
                if error:
                    minute.errors += 1
                    minute.first_error = minute.first_error or error
                else:
                    minute.latencies_s.append(latency)


@dataclass
class RssSampler:
    """VmRSS of each process every `RSS_EVERY_S`, called from the soak's clock thread."""

    roles: dict[str, int]
    samples: list[dict[str, float]] = field(default_factory=list)
    next_at: float = 0.0

    def tick(self, elapsed_s: float) -> None:
        if elapsed_s < self.next_at:
            return
        self.next_at = elapsed_s + RSS_EVERY_S
        sample: dict[str, float] = {"t_s": round(elapsed_s, 1)}
        for role, pid in self.roles.items():
            sample[role] = proc_memory_kb(pid).get("VmRSS", 0) / 1024
        self.samples.append(sample)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "classification.yaml")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity to hold")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients for the capacity")
    parser.add_argument("--capacity_seconds", type=float, default=30.0)
    parser.add_argument("--max_growth", type=float, default=0.10, help="largest RSS growth start to end")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import yaml

    name = yaml.safe_load(args.spec.read_text())["metadata"]["name"]
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "soak-logs"
    logs.mkdir(exist_ok=True)
    frames = jpeg_frames(8)
    stack: Stack = start_vss_run(args.spec, name, logs)
    try:
        target = TargetSpec(args.protocol, stack.endpoints[args.protocol], name, ("labels",))
        make_sender = SENDERS[args.protocol](target, frames)
        print(f"capacity: {args.concurrency} closed-loop clients for {args.capacity_seconds:.0f}s "
              f"(load average {load_average()})", flush=True)
        closed = run_load(make_sender, frames, concurrency=args.concurrency, requests=10**9,
                          warmup=4 * args.concurrency, max_seconds=args.capacity_seconds)
        capacity = len(closed["latencies_s"]) / closed["wall_s"]
        rate = args.load * capacity
        print(f"  {capacity:.1f} req/s, p50 {percentile(closed['latencies_s'], 50) * 1e3:.1f} ms, "
              f"errors {closed['errors']}; soaking at {rate:.1f} req/s for {args.minutes:g} min", flush=True)
        sampler = RssSampler(dict(stack.roles))
        soak = Soak(make_sender, frames, rate, args.minutes * 60, workers=2 * args.concurrency)
        soak.run(sampler.tick)
        sampler.tick(float("inf"))  # the end
        load_end = load_average()
    finally:
        stack.stop()
    return report(args, name, capacity, rate, soak, sampler, load_end)


def report(args: argparse.Namespace, name: str, capacity: float, rate: float, soak: Soak, sampler: RssSampler,
           load_end: str) -> int:
    roles = list(sampler.roles)
    rows: list[dict[str, object]] = []
    for index in sorted(soak.minutes):
        minute = soak.minutes[index]
        in_minute = [s for s in sampler.samples if index * 60 <= s["t_s"] < (index + 1) * 60] or sampler.samples[-1:]
        row: dict[str, object] = {"minute": index + 1, "requests": len(minute.latencies_s) + minute.errors,
                                  "errors": minute.errors,
                                  "p50_ms": round(percentile(minute.latencies_s, 50) * 1e3, 1),
                                  "p99_ms": round(percentile(minute.latencies_s, 99) * 1e3, 1)}
        for role in roles:
            row[f"{role}_rss_mb"] = round(in_minute[-1][role], 1)
        rows.append(row)
    columns = [("minute", "min"), ("requests", "requests"), ("errors", "errors"), ("p50_ms", "p50 ms"),
               ("p99_ms", "p99 ms"), *((f"{r}_rss_mb", f"{r} RSS MB") for r in roles)]
    print(f"\nsoak of {name} over {args.protocol}: {rate:.1f} req/s ({args.load:.0%} of {capacity:.1f}); "
          f"load average at the end {load_end}")
    print(to_text(rows, columns))
    first, last = sampler.samples[0], sampler.samples[-1]
    growth = {role: last[role] / first[role] for role in roles}
    memory_rows: list[dict[str, object]] = [
        {"process": role, "start_mb": round(first[role], 1), "end_mb": round(last[role], 1),
         "ratio": round(growth[role], 3), "flat": "yes" if growth[role] <= 1 + args.max_growth else "NO"}
        for role in roles]
    print(to_text(memory_rows, [("process", "process"), ("start_mb", "RSS start MB"), ("end_mb", "RSS end MB"),
                                ("ratio", "end/start"), ("flat", f"within {args.max_growth:.0%}")]))
    errors = sum(m.errors for m in soak.minutes.values())
    first_errors = [m.first_error for m in soak.minutes.values() if m.first_error]
    if first_errors:
        print(f"first error: {first_errors[0]}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = {"model": name, "protocol": args.protocol, "capacity_rps": capacity, "rate_rps": rate,
              "minutes": rows, "rss_samples_mb": sampler.samples, "memory": memory_rows, "errors": errors,
              "load_average_end": load_end}
    path = args.out / f"soak-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"results: {path}")
    grew = [role for role in roles if growth[role] > 1 + args.max_growth]
    if grew:
        print(f"FAIL: RSS grew more than {args.max_growth:.0%}: {', '.join(grew)}")
    if errors:
        print(f"FAIL: {errors} requests failed")
    return 1 if grew or errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
