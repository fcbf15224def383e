"""The time-series tasks side by side: anomaly detection and forecasting on the shipped models, 1 or 64
windows per request (`--windows`), at concurrency 1, 4 and 16, for

  a   in-process: the transformer's own task code and the predictor's ONNX Runtime wrapper, no serving
      (`vss_models.timeseries.evaluation.InProcess`), fed the same number of windows per call: the ceiling;
  b   ours through the `vss run` command lines: v2 gRPC and v2 REST (binary FP32 `series` tensor [W, T, F]);
  b   ours with v1 JSON instances (`{"instances": [[[...], ...]]}`): the same servers fed JSON tensors,
      the form KServe's docs use.

The KServe docs' transformer + predictor baselines of `suite.py` are image pipelines; they have no
time-series form, so the JSON column here is the JSON-tensor cost on our own servers.

Targets take turns in interleaved rounds, warm-up excluded, a fixed request count. Prints one table with
requests/s, windows/s, ratios against (a) at the same windows per request and against the JSON form, the
target of issue 17 (64 windows to a request: v2 gRPC and REST at >= 0.5x in-process windows/s), and writes
it as Markdown and CSV.

    python benchmarks/series.py
    python benchmarks/series.py --requests 60 --concurrency 1,4 --windows 64
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import yaml

from benchmarks.loadgen import MakeSender, Send, TargetSpec, Tensor, grpc_sender, rest_sender, run_load
from benchmarks.servers import REPO, start_vss_run
from vss_api.vssmodel import VSSModel
from vss_models.timeseries.evaluation import ANOMALY_OUTPUTS, FORECAST_OUTPUTS, InProcess
from vss_models.timeseries.served import with_version
from vss_transformers.anomaly import AnomalyTask
from vss_transformers.forecasting import ForecastingTask

HERE = Path(__file__).resolve().parent
STORE = REPO / "models" / "artifacts"
TASKS = {"anomaly": ("anomaly.yaml", ANOMALY_OUTPUTS), "forecasting": ("forecasting.yaml", FORECAST_OUTPUTS)}
TARGETS = ("a in-process", "b ours v2 gRPC", "b ours v2 REST", "b ours v1 JSON")
TARGET_WINDOWS = 64  # issue 17: windows sent 64 to a request reach >= 0.5x in-process windows/s
TARGET_RATIO = 0.5
DISTINCT_REQUESTS = 8  # payloads cycled through, each of `windows` different windows


def _v1_json(url: str, model: str, shape: tuple[int, int], payloads: list[bytes]) -> MakeSender:
    host, port = url.rsplit(":", 1)
    # the client's JSON encoding is not the server's cost: bodies are made beforehand
    bodies = {p: json.dumps({"instances": np.frombuffer(p, np.float32).reshape(-1, *shape).tolist()})
              for p in payloads}

    def make() -> Send:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)

        def send(payload: bytes) -> None:
            conn.request("POST", f"/v1/models/{model}:predict", body=bodies[payload],
                         headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200 or "predictions" not in json.loads(body):
                raise RuntimeError(f"HTTP {reply.status}: {body[:300]!r}")

        return send

    return make


def _in_process(local: InProcess[Any], shape: tuple[int, int]) -> MakeSender:
    def make() -> Send:
        def send(payload: bytes) -> None:
            local(np.frombuffer(payload, np.float32).reshape(-1, *shape))

        return send

    return make


def measure(task: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    example_name, outputs = TASKS[task]
    example = REPO / "examples" / example_name
    model = VSSModel.from_yaml_file(example)
    spec_path = with_version(example, model.spec.version, STORE, work)
    document = yaml.safe_load(spec_path.read_text())
    if args.max_batch_size:  # the predictor's batching as the example has it, or this largest merged batch
        document["spec"]["predictor"].setdefault("batching", {})["maxBatchSize"] = args.max_batch_size
        spec_path.write_text(yaml.safe_dump(document, sort_keys=False))
    name = str(document["metadata"]["name"])
    model_file = Path(document["spec"]["versions"][[v["name"] for v in document["spec"]["versions"]].index(
        model.spec.version)]["storageUri"])
    block = model.spec.anomaly if task == "anomaly" else model.spec.forecasting
    task_code = AnomalyTask(block) if task == "anomaly" else ForecastingTask(block)  # type: ignore[arg-type]
    local: InProcess[Any] = InProcess.open(task_code, model_file)
    steps, features = (int(d) for d in local.runtime.inputs[0].shape[1:])

    def series(payload: bytes) -> Tensor:  # W windows as the v2 `series` input, FP32 [W, T, F]
        return "series", "FP32", [len(payload) // (4 * steps * features), steps, features], payload

    rng = np.random.default_rng(0)
    logs = work / f"logs-{task}"
    logs.mkdir(parents=True, exist_ok=True)
    stack = start_vss_run(spec_path, name, logs)
    try:
        grpc_url, rest_url = stack.endpoints["grpc"], stack.endpoints["rest"]
        rows = []
        for count in args.windows:
            payloads = [rng.normal(20.0, 3.0, (count, steps, features)).astype(np.float32).tobytes()
                        for _ in range(DISTINCT_REQUESTS)]
            senders: dict[str, MakeSender] = {
                "a in-process": _in_process(local, (steps, features)),
                "b ours v2 gRPC": grpc_sender(TargetSpec("grpc", grpc_url, name, outputs), payloads, series),
                "b ours v2 REST": rest_sender(TargetSpec("rest", rest_url, name, outputs), payloads, series),
                "b ours v1 JSON": _v1_json(rest_url, name, (steps, features), payloads),
            }
            for concurrency in args.concurrency:
                rows += _level(task, count, concurrency, senders, payloads, args, list(stack.roles.values()))
        return rows
    finally:
        stack.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _level(task: str, count: int, concurrency: int, senders: dict[str, MakeSender], payloads: list[bytes],
           args: argparse.Namespace, servers: list[int]) -> list[dict[str, Any]]:
    """One windows-per-request and concurrency level: every target in interleaved rounds. Beside the wall-clock
    figures, the CPU time each request cost: the server processes' (transformer and predictor) for ours, this
    process's for in-process (the load generator's threads included, little beside the task); on a machine others
    load too it moves far less than the rates do."""
    latencies: dict[str, list[float]] = {t: [] for t in TARGETS}
    seconds = {t: 0.0 for t in TARGETS}
    errors = {t: 0 for t in TARGETS}
    cpu = {t: 0.0 for t in TARGETS}
    per_round = max(args.requests // args.rounds, 2 * concurrency)
    for round_index in range(args.rounds):
        order = TARGETS[round_index % len(TARGETS):] + TARGETS[:round_index % len(TARGETS)]
        for target in order:
            local = target == "a in-process"
            result = run_load(senders[target], payloads, concurrency=concurrency, requests=max(4, concurrency),
                              warmup=0, max_seconds=args.max_seconds_per_cell)  # warm-up, outside the CPU count
            used = time.process_time() if local else sum(cpu_seconds(pid) for pid in servers)
            result = run_load(senders[target], payloads, concurrency=concurrency, requests=per_round,
                              warmup=0, max_seconds=args.max_seconds_per_cell)
            cpu[target] += (time.process_time() if local else sum(cpu_seconds(pid) for pid in servers)) - used
            latencies[target] += result["latencies_s"]
            seconds[target] += result["wall_s"]
            errors[target] += result["errors"]
            if result["first_error"]:
                print(f"[{task}] {target}: {result['first_error']}", flush=True)
    rows = []
    for target in TARGETS:
        ms = np.array(latencies[target]) * 1000
        per_s = len(ms) / seconds[target] if seconds[target] else 0.0
        rows.append({"task": task, "w": count, "c": concurrency, "target": target, "n": len(ms),
                     "err": errors[target], "per_s": per_s, "windows_per_s": per_s * count,
                     "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                     "p99": float(np.percentile(ms, 99)),
                     "cpu_ms": cpu[target] / len(ms) * 1000 if len(ms) else float("nan")})
    print(f"[{task}] w={count} c={concurrency}: " + ", ".join(
        f"{r['target']} {r['windows_per_s']:.0f} windows/s" for r in rows), flush=True)
    return rows


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def rate(row: dict[str, Any], target: str) -> float:
        key = (row["task"], row["w"], row["c"], target)
        return float(next(r["per_s"] for r in rows if (r["task"], r["w"], r["c"], r["target"]) == key))

    for row in rows:
        row["x_a"] = row["per_s"] / rate(row, "a in-process")
        row["x_json"] = row["per_s"] / rate(row, "b ours v1 JSON")
    return rows


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| task | windows/req | c | target | n | err | req/s | windows/s | p50 ms | p95 ms | "
             "p99 ms | CPU ms/req | x a | x v1 JSON |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['task']} | {r['w']} | {r['c']} | {r['target']} | {r['n']} | {r['err']} | {r['per_s']:.1f} | "
              f"{r['windows_per_s']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['cpu_ms']:.2f} | "
              f"{r['x_a']:.2f} | {r['x_json']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 17's target, one line per task, concurrency and protocol measured at TARGET_WINDOWS windows a request."""
    lines = []
    for row in rows:
        if row["w"] == TARGET_WINDOWS and row["target"] in ("b ours v2 gRPC", "b ours v2 REST"):
            verdict = "met" if row["x_a"] >= TARGET_RATIO else "NOT met"
            lines.append(f"target (issue 17) {row['task']} c={row['c']} {row['target'][7:]}: {TARGET_WINDOWS} windows "
                         f"to a request at {row['x_a']:.2f}x in-process windows/s (>= {TARGET_RATIO}x): {verdict}")
    return lines


def _load() -> str:
    return "load average " + ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="anomaly,forecasting")
    parser.add_argument("--windows", default="1,64", help="windows per request, comma-separated")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--max_batch_size", type=int, default=0,
                        help="serve with this spec.predictor.batching.maxBatchSize (0: the example's)")
    parser.add_argument("--requests", type=int, default=240, help="recorded requests per target and level")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max_seconds_per_cell", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.windows = [int(w) for w in args.windows.split(",")]
    started = time.time()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for task in args.tasks.split(","):
            rows += measure(task, args, Path(scratch))
    rows = with_ratios(rows)
    header = (f"# series\n\n{time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC, "
              f"{round(time.time() - started)} s; `uptime`: {_load()}; {args.requests} requests per target "
              f"and level in {args.rounds} interleaved rounds, warm-up excluded; models from models/artifacts, "
              "specs from examples/")
    text = markdown(rows, header)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "series.md").write_text(text)
    with (args.out / "series.csv").open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        if row["target"] in ("b ours v2 gRPC", "b ours v2 REST"):
            print(f"{row['task']}: {row['w']} windows/request c={row['c']} {row['target'][7:]} "
                  f"{row['windows_per_s']:.0f} windows/s, {row['x_a']:.2f}x in-process, "
                  f"{row['x_json']:.2f}x v1 JSON")
    for line in target_lines(rows):
        print(line)
    print(f"written: {args.out}/series.{{md,csv}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
