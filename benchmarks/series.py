"""The time-series tasks side by side: anomaly detection and forecasting on the shipped models, one window
per request, at concurrency 1, 4 and 16, for

  a   in-process: the transformer's own task code and the predictor's ONNX Runtime wrapper, no serving
      (`vss_models.timeseries.evaluation.InProcess`), the ceiling;
  b   ours through the `vss run` command lines: v2 gRPC and v2 REST (binary FP32 `series` tensor);
  b   ours with v1 JSON instances (`{"instances": [[[...], ...]]}`): the same servers fed JSON tensors,
      the form KServe's docs use.

The KServe docs' transformer + predictor baselines of `suite.py` are image pipelines; they have no
time-series form, so the JSON column here is the JSON-tensor cost on our own servers.

Targets take turns in interleaved rounds, warm-up excluded, a fixed request count. Prints one table with
ratios against (a) and against the JSON form, and writes it as Markdown and CSV.

    python benchmarks/series.py
    python benchmarks/series.py --requests 60 --concurrency 1,4
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import statistics
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


def _v1_json(url: str, model: str, shape: tuple[int, int], windows: list[bytes]) -> MakeSender:
    host, port = url.rsplit(":", 1)
    # the client's JSON encoding is not the server's cost: bodies are made beforehand
    bodies = {w: json.dumps({"instances": [np.frombuffer(w, np.float32).reshape(shape).tolist()]}) for w in windows}

    def make() -> Send:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)

        def send(window: bytes) -> None:
            conn.request("POST", f"/v1/models/{model}:predict", body=bodies[window],
                         headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200 or "predictions" not in json.loads(body):
                raise RuntimeError(f"HTTP {reply.status}: {body[:300]!r}")

        return send

    return make


def _in_process(local: InProcess, shape: tuple[int, int]) -> MakeSender:
    def make() -> Send:
        def send(window: bytes) -> None:
            local(np.frombuffer(window, np.float32).reshape(1, *shape))

        return send

    return make


def measure(task: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    example_name, outputs = TASKS[task]
    example = REPO / "examples" / example_name
    model = VSSModel.from_yaml_file(example)
    spec_path = with_version(example, model.spec.version, STORE, work)
    document = yaml.safe_load(spec_path.read_text())
    name = str(document["metadata"]["name"])
    model_file = Path(document["spec"]["versions"][[v["name"] for v in document["spec"]["versions"]].index(
        model.spec.version)]["storageUri"])
    block = model.spec.anomaly if task == "anomaly" else model.spec.forecasting
    task_code = AnomalyTask(block) if task == "anomaly" else ForecastingTask(block)  # type: ignore[arg-type]
    local = InProcess.open(task_code, model_file)
    steps, features = (int(d) for d in local.runtime.inputs[0].shape[1:])

    def series(window: bytes) -> Tensor:  # one window as the v2 `series` input, FP32 [1, T, F]
        return "series", "FP32", [1, steps, features], window

    rng = np.random.default_rng(0)
    windows = [rng.normal(20.0, 3.0, (steps, features)).astype(np.float32).tobytes() for _ in range(64)]
    logs = work / f"logs-{task}"
    logs.mkdir(parents=True, exist_ok=True)
    stack = start_vss_run(spec_path, name, logs)
    try:
        grpc_url, rest_url = stack.endpoints["grpc"], stack.endpoints["rest"]
        senders: dict[str, MakeSender] = {
            "a in-process": _in_process(local, (steps, features)),
            "b ours v2 gRPC": grpc_sender(TargetSpec("grpc", grpc_url, name, outputs), windows, series),
            "b ours v2 REST": rest_sender(TargetSpec("rest", rest_url, name, outputs), windows, series),
            "b ours v1 JSON": _v1_json(rest_url, name, (steps, features), windows),
        }
        rows = []
        for concurrency in args.concurrency:
            latencies: dict[str, list[float]] = {t: [] for t in TARGETS}
            seconds = {t: 0.0 for t in TARGETS}
            errors = {t: 0 for t in TARGETS}
            per_round = max(args.requests // args.rounds, 2 * concurrency)
            for round_index in range(args.rounds):
                order = TARGETS[round_index % len(TARGETS):] + TARGETS[:round_index % len(TARGETS)]
                for target in order:
                    result = run_load(senders[target], windows, concurrency=concurrency, requests=per_round,
                                      warmup=max(4, concurrency), max_seconds=args.max_seconds_per_cell)
                    latencies[target] += result["latencies_s"]
                    seconds[target] += result["wall_s"]
                    errors[target] += result["errors"]
                    if result["first_error"]:
                        print(f"[{task}] {target}: {result['first_error']}", flush=True)
            for target in TARGETS:
                ms = np.array(latencies[target]) * 1000
                rows.append({"task": task, "c": concurrency, "target": target, "n": len(ms),
                             "err": errors[target], "per_s": len(ms) / seconds[target] if seconds[target] else 0.0,
                             "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                             "p99": float(np.percentile(ms, 99))})
            print(f"[{task}] c={concurrency}: " + ", ".join(
                f"{r['target']} {r['per_s']:.0f}/s" for r in rows if r["c"] == concurrency), flush=True)
        return rows
    finally:
        stack.stop()


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def rate(task: str, c: int, target: str) -> float:
        return float(next(r["per_s"] for r in rows if (r["task"], r["c"], r["target"]) == (task, c, target)))

    for row in rows:
        row["x_a"] = row["per_s"] / rate(row["task"], row["c"], "a in-process")
        row["x_json"] = row["per_s"] / rate(row["task"], row["c"], "b ours v1 JSON")
    return rows


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| task | c | target | n | err | req/s | p50 ms | p95 ms | p99 ms | x a | x v1 JSON |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['task']} | {r['c']} | {r['target']} | {r['n']} | {r['err']} | {r['per_s']:.1f} | "
              f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['x_a']:.2f} | {r['x_json']:.2f} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="anomaly,forecasting")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=240, help="recorded requests per target and level")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max_seconds_per_cell", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    started = time.time()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for task in args.tasks.split(","):
            rows += measure(task, args, Path(scratch))
    rows = with_ratios(rows)
    header = (f"# series\n\n{time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC, "
              f"{round(time.time() - started)} s; one window per request; {args.requests} requests per target "
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
    for task in args.tasks.split(","):
        for c in args.concurrency:
            grpc = next(r for r in rows if (r["task"], r["c"], r["target"]) == (task, c, "b ours v2 gRPC"))
            print(f"{task}: c={c} v2 gRPC {grpc['x_a']:.2f}x in-process, {grpc['x_json']:.2f}x v1 JSON")
    print(f"written: {args.out}/series.{{md,csv}}; median p50 of gRPC "
          f"{statistics.median(r['p50'] for r in rows if r['target'] == 'b ours v2 gRPC'):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
