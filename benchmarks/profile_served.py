"""Where the served path's time goes: the predictor and the transformer started with the flags `vss run`
gives them (from `serving_args`), each under pyinstrument with all threads sampled (benchmarks/profiled.py),
loaded over v2 gRPC at concurrency 1 and then 8 with 1280x720 JPEG frames. Prints

  * the stage breakdown from the processes' own `inference_duration_seconds` histograms (deltas over
    each load phase): preprocess, the hop to the predictor, the predictor's queue + run, postprocess,
    and what the client saw beyond the transformer's own stages (protocol, KServe's data plane);
  * the top self-time functions per process and thread group;

and writes the profiles (tree, flat, HTML) to --out.

For the time-series tasks (`--task anomaly|forecasting`) the shipped model and examples/ spec serve, and
the load is `--windows` random windows per v2 gRPC request, sent from this process.

    python benchmarks/profile_served.py --requests 24
    python benchmarks/profile_served.py --task classification
    python benchmarks/profile_served.py --task forecasting --windows 64 --concurrency 1,4 --requests 200
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.frames import read_frames, write_frames
from benchmarks.loadgen import TargetSpec, Tensor, grpc_sender, run_load
from benchmarks.servers import REPO, Stack, free_port, wait_ready
from benchmarks.suite import CLASSIFICATION_OUTPUTS, DETECTION_OUTPUTS, HERE, Config, _python, prepare_models
from vss_api.serving_flags import predictor_args, transformer_args
from vss_api.vssmodel import VSSModel
from vss_models.timeseries.evaluation import ANOMALY_OUTPUTS, FORECAST_OUTPUTS
from vss_models.timeseries.served import with_version

SERIES = {"anomaly": ("anomaly.yaml", ANOMALY_OUTPUTS), "forecasting": ("forecasting.yaml", FORECAST_OUTPUTS)}


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(sample name, stage) → value for the duration and batch-size series of one process."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("inference_duration_seconds", "inference_batch_size"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                key = (sample.name, sample.labels.get("stage", ""))
                values[key] = values.get(key, 0.0) + sample.value
    return values


def mean_ms(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], stage: str) -> float:
    total = after.get(("inference_duration_seconds_sum", stage), 0) - before.get(
        ("inference_duration_seconds_sum", stage), 0)
    count = after.get(("inference_duration_seconds_count", stage), 0) - before.get(
        ("inference_duration_seconds_count", stage), 0)
    return total / count * 1000 if count else float("nan")


def mean_batch(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> float:
    total = after.get(("inference_batch_size_sum", ""), 0) - before.get(("inference_batch_size_sum", ""), 0)
    count = after.get(("inference_batch_size_count", ""), 0) - before.get(("inference_batch_size_count", ""), 0)
    return total / count if count else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["detection", "classification", *SERIES], default="detection")
    parser.add_argument("--windows", type=int, default=64, help="time-series tasks: windows per request")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--requests", type=int, default=24, help="recorded requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.002, help="pyinstrument sampling interval, s")
    parser.add_argument("--detector", type=Path, default=None)
    parser.add_argument("--classifier", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=HERE / ".cache")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profiles")
    parser.add_argument("--top", type=int, default=12, help="self-time lines printed per thread group")
    a = parser.parse_args(argv)
    levels = [int(c) for c in a.concurrency.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.work / "logs").mkdir(parents=True, exist_ok=True)
    series = a.task in SERIES
    if series:
        example, series_outputs = SERIES[a.task]
        version = VSSModel.from_yaml_file(REPO / "examples" / example).spec.version
        spec_path = with_version(REPO / "examples" / example, version, REPO / "models" / "artifacts", a.work)
        spec = VSSModel.from_yaml_file(spec_path).spec
        name = str(yaml.safe_load(spec_path.read_text())["metadata"]["name"])
        model_path = next(v.storage_uri for v in spec.versions if v.name == version)
    else:
        cfg = Config(tasks=[a.task], targets=[], concurrency=levels, requests=a.requests, warmup=a.warmup,
                     rounds=1, max_seconds_per_cell=600, work=a.work, out=a.out, name="profile",
                     detector=a.detector, classifier=a.classifier)
        frames_dir = a.work / "frames"
        write_frames(frames_dir, 8)
        (setup,) = prepare_models(cfg, read_frames(frames_dir))
        spec = VSSModel.from_yaml_file(setup.spec_path).spec
        name = "yolo" if a.task == "detection" else "classifier"
        model_path = str(setup.model_path)
    p_http, p_grpc, t_http, t_grpc = free_port(), free_port(), free_port(), free_port()
    stack = Stack("profile")
    wrap = [sys.executable, "-m", "benchmarks.profiled", "--interval", str(a.interval), "--out"]
    phases: list[dict[str, Any]] = []
    try:
        predictor = stack.start("predictor", [*wrap, str(a.out / f"{a.task}-predictor"), "-m", "vss_predictors",
                                              *predictor_args(spec, spec.served_version(), model_path,
                                                              p_http, p_grpc, model_name=name)], a.work / "logs")
        wait_ready(f"http://127.0.0.1:{p_http}/v2/models/{name}/ready", [predictor], 600)
        transformer = stack.start("transformer", [
            *wrap, str(a.out / f"{a.task}-transformer"), "-m", "vss_transformers",
            *transformer_args(spec, name, f"127.0.0.1:{p_grpc}", f"127.0.0.1:{p_http}", t_http, t_grpc)],
            a.work / "logs")
        wait_ready(f"http://127.0.0.1:{t_http}/v2/models/{name}/ready", [transformer], 600)
        outputs = DETECTION_OUTPUTS if a.task == "detection" else CLASSIFICATION_OUTPUTS
        for process in (predictor, transformer):  # profile the load, not the start-up
            process.popen.send_signal(signal.SIGUSR1)
        for c in levels:
            before = (scrape(t_http), scrape(p_http))
            if series:
                raw = _series_load(a, f"127.0.0.1:{t_grpc}", name, series_outputs, spec, c)
            else:
                raw = json.loads(_python([
                    "-m", "benchmarks.loadgen", "--target", "grpc", "--url", f"127.0.0.1:{t_grpc}", "--model", name,
                    "--outputs", outputs, "--frames", str(frames_dir), "--concurrency", str(c), "--requests",
                    str(a.requests), "--warmup", str(a.warmup), "--max_seconds", "600"]))
            after = (scrape(t_http), scrape(p_http))
            phases.append({"c": c, "raw": raw, "before": before, "after": after})
            print(f"c={c}: {len(raw['latencies_s']) / raw['wall_s']:.2f} req/s, "
                  f"p50 {statistics.median(raw['latencies_s']) * 1000:.1f} ms", flush=True)
    finally:
        stack.stop(grace_s=60)
    print_breakdown(phases)
    print_profiles(a.out, a.task, a.top)
    return 0


def _series_load(a: argparse.Namespace, url: str, name: str, outputs: tuple[str, ...], spec: Any,
                 concurrency: int) -> dict[str, Any]:
    """Closed-loop v2 gRPC load of `a.windows` random windows per request, from this process."""
    block = spec.anomaly if a.task == "anomaly" else spec.forecasting
    steps = block.window if a.task == "anomaly" else block.lookback
    shape = [a.windows, steps, len(block.features)]
    rng = np.random.default_rng(0)
    payloads = [rng.normal(20.0, 3.0, shape).astype(np.float32).tobytes() for _ in range(8)]

    def encode(payload: bytes) -> Tensor:
        return "series", "FP32", shape, payload

    result: dict[str, Any] = run_load(grpc_sender(TargetSpec("grpc", url, name, outputs), payloads, encode),
                                      payloads, concurrency=concurrency, requests=a.requests, warmup=a.warmup,
                                      max_seconds=600)
    return result


def print_breakdown(phases: list[dict[str, Any]]) -> None:
    rows: list[tuple[str, list[float]]] = []

    def add(label: str, values: list[float]) -> None:
        rows.append((label, values))

    t = [(p["before"][0], p["after"][0]) for p in phases]
    pr = [(p["before"][1], p["after"][1]) for p in phases]
    client = [statistics.fmean(p["raw"]["latencies_s"]) * 1000 for p in phases]
    total = [mean_ms(b, a, "total") for b, a in t]
    hop = [mean_ms(b, a, "predict") for b, a in t]
    predictor = [mean_ms(b, a, "predict") for b, a in pr]
    add("client: mean latency", client)
    add("transformer: preprocess (decode, letterbox)", [mean_ms(b, a, "preprocess") for b, a in t])
    add("transformer: predict (gRPC hop + predictor)", hop)
    add("  predictor: queue + batch + run", predictor)
    add("  hop: transport, (de)serialisation", [h - p for h, p in zip(hop, predictor, strict=True)])
    add("transformer: postprocess (decode, NMS)", [mean_ms(b, a, "postprocess") for b, a in t])
    add("transformer: its stages together", total)
    add("client minus stages: protocol, KServe, queueing", [c - s for c, s in zip(client, total, strict=True)])
    add("predictor: mean batch size (rows)", [mean_batch(b, a) for b, a in pr])
    width = max(len(label) for label, _ in rows)
    print("\nstage, mean ms per request".ljust(width + 1) + "".join(f"{'c=' + str(p['c']):>10}" for p in phases))
    for label, values in rows:
        print(label.ljust(width) + "".join(f"{v:10.1f}" for v in values))


# Where an idle thread waits: left out of the busy share.
IDLE = ("epoll.poll", "select.poll", "SimpleQueue.get", "Condition.wait", "lock.acquire", "Event.wait", "sleep",
        "Queue.get", "select  <built-in>")


def busy_lines(flat_text: str) -> list[tuple[float, str]]:
    """(share of the group's busy time, 'function  location') from a pyinstrument flat rendering, with
    the idle waits taken out and the rest renormalised."""
    found = []
    for line in flat_text.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        if match and not any(idle in match.group(2) for idle in IDLE):
            found.append((float(match.group(1)), match.group(2).strip()))
    busy = sum(share for share, _ in found)
    return [(share / busy * 100 if busy else 0.0, what) for share, what in found]


def print_profiles(out: Path, task: str, top: int) -> None:
    for path in sorted(out.glob(f"{task}-*-flat.txt")):
        text = path.read_text()
        lines = busy_lines(text)
        idle = 100 - sum(float(m.group(1)) for m in re.finditer(r"^\s*([\d.]+)%\s+(?!.*(?:"
                         + "|".join(re.escape(i) for i in IDLE) + r"))", text, re.M))
        print(f"\n== {path.stem.removesuffix('-flat')}: self time as % of busy time ({idle:.0f}% of samples "
              "were idle waits)")
        for share, what in lines[:top]:
            print(f"{share:5.1f}%  {what}")


if __name__ == "__main__":
    raise SystemExit(main())
