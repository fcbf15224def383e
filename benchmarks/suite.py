"""Side-by-side benchmark of the ways to serve the same model, in one run on one machine:

  (a) in-process ONNX Runtime with the served path's own pre/post code: the ceiling
      (detection also at a 640x640 square letterbox, the preprocessing the docs' pattern uses);
  (b) our served path as `vss run` serves it: v2 gRPC and v2 REST (binary), `image` BYTES in; on the CPU one
      process (single-process mode, `spec.predictor.processes`), and as targets b2-* the two-process layout
      (transformer -> gRPC -> predictor) that GPU models keep;
  (u) what a user would write instead: Ultralytics' own `predict` behind a small FastAPI app, one uvicorn
      worker, in a virtualenv of its own (benchmarks/peers/; Ultralytics is AGPL-3.0, a peer and never a
      dependency); detection only. With it, the detector is YOLOv8n as Ultralytics' exporter makes it offline
      from its model YAML, the same ONNX file for every target (`--detector` overrides);
  (c) the patterns of KServe's docs (benchmarks/baselines/): a `kserve.Model` transformer sending v1
      JSON tensors to a `kserve.Model` predictor, and the same transformer with `--predictor_protocol
      grpc-v2`; clients send the docs' v1 `{"instances": [{"image": {"b64": ...}}]}`.

Every target gets the same 1280x720 JPEG frames and a fixed number of recorded requests per concurrency
level after a warm-up, in rounds interleaved across targets so that a noisy neighbour hurts all alike.
Printed and written (CSV, Markdown, PNG, raw JSON) as one table with ratios against (a) and (c), the
model's own compute at each input shape (the latency floor), and the RSS of every serving process.

    python benchmarks/suite.py                       # detection + classification, c = 1, 4, 8, 16
    python benchmarks/suite.py --requests 8 --warmup 2 --concurrency 1,4 --tasks detection   # quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.frames import read_frames, write_frames
from benchmarks.results import Measurement, Table, Target, to_csv, to_markdown, to_text, write_chart
from benchmarks.servers import (
    REPO,
    Stack,
    child_env,
    start_kserve_docs,
    start_ultralytics_fastapi,
    start_vss_run,
    ultralytics_export,
    vssmodel_yaml,
)
from vss_api.progress import Progress

HERE = Path(__file__).resolve().parent
DETECTION_OUTPUTS = "boxes,scores,class_ids,labels,num_detections"
CLASSIFICATION_OUTPUTS = "labels,scores,class_ids"

TARGETS = {
    "m": Target("m", "model alone", "m"),
    "m-sq": Target("m-sq", "model alone 640x640", "m"),
    "a": Target("a", "a in-process", "a"),
    "a-sq": Target("a-sq", "a in-process 640x640", "a"),
    "b-grpc": Target("b-grpc", "b ours v2 gRPC", "b"),
    "b-rest": Target("b-rest", "b ours v2 REST", "b"),
    "b2-grpc": Target("b2-grpc", "b2 ours v2 gRPC 2 procs", "b"),
    "b2-rest": Target("b2-rest", "b2 ours v2 REST 2 procs", "b"),
    "u-fastapi": Target("u-fastapi", "u Ultralytics+FastAPI", "u"),
    "c-json": Target("c-json", "c docs v1 JSON", "c"),
    "c-grpc": Target("c-grpc", "c docs grpc-v2", "c"),
}
BASELINES = ("a", "u-fastapi", "c-json", "c-grpc")
FLOORS = ("m", "m-sq")  # measured at concurrency 1 only: they give the latency floor
# The model-alone target at the input shape each target feeds the model.
FLOOR_OF = {"m": "m", "a": "m", "b-grpc": "m", "b-rest": "m", "b2-grpc": "m", "b2-rest": "m", "u-fastapi": "m",
            "m-sq": "m-sq", "a-sq": "m-sq", "c-json": "m-sq", "c-grpc": "m-sq"}


@dataclass
class Config:
    tasks: list[str]
    targets: list[str]
    concurrency: list[int]
    requests: int
    warmup: int
    rounds: int
    max_seconds_per_cell: float
    work: Path
    out: Path
    name: str
    detector: Path | None = None
    classifier: Path | None = None
    baselines: Sequence[str] = BASELINES
    via_vss_run: bool = False
    max_in_flight: int = 2


@dataclass
class TaskSetup:
    task: str
    model_path: Path
    spec_path: Path
    square_spec_path: Path | None
    names: str
    floors_ms: dict[str, float] = field(default_factory=dict)
    floor_shapes: dict[str, list[int]] = field(default_factory=dict)

    def record_floor(self, target: str, m: Measurement, shape: list[int]) -> None:
        """The model-alone cells' p50 is the floor of the targets that feed the model that shape."""
        self.floor_shapes[target] = shape
        if target == "m":
            self.floors_ms[self.task] = m.p(50)
        else:
            for served in ("m-sq", "a-sq", "c-json", "c-grpc"):
                self.floors_ms[f"{self.task}/{served}"] = m.p(50)


# ------------------------------------------------------------------------------------------ setup


def prepare_models(cfg: Config, frames: list[bytes]) -> list[TaskSetup]:
    """The models (stand-ins unless given) and the VSSModel YAMLs `vss run` and (a) read."""
    setups = []
    models = cfg.work / "models"
    for task in cfg.tasks:
        if task == "detection":
            path = cfg.detector or (ultralytics_export(models / "ultralytics") if "u-fastapi" in cfg.targets
                                    else _standin_detector(models, frames[0]))
        else:
            path = cfg.classifier or _standin_classifier(models)
        name = "yolo" if task == "detection" else "classifier"
        spec = cfg.work / f"{task}.yaml"
        spec.write_text(vssmodel_yaml(name, task, path.resolve(), max_in_flight=cfg.max_in_flight))
        square = None
        if task == "detection":
            square = cfg.work / f"{task}-square.yaml"
            square.write_text(vssmodel_yaml(name, task, path.resolve(), rectangular=False,
                                            max_in_flight=cfg.max_in_flight))
        setups.append(TaskSetup(task, path.resolve(), spec, square, _names_of(path)))
    return setups


def _standin_detector(folder: Path, jpeg: bytes) -> Path:
    path = folder / "yolov8n-standin.onnx"
    if not path.is_file():
        import numpy as np
        import onnx
        import simplejpeg

        from benchmarks.standin_models import calibrated_yolov8n
        from vss_transformers.letterbox import letterbox, target_shape

        image = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        boxed, _ = letterbox(image, target_shape([image.shape[:2]], 640, 32, True))
        frame = np.ascontiguousarray((boxed / np.float32(255)).astype(np.float32).transpose(2, 0, 1)[None])
        _save(onnx, calibrated_yolov8n(frame), path)
    return path


def _standin_classifier(folder: Path) -> Path:
    path = folder / "resnet18-standin.onnx"
    if not path.is_file():
        import onnx

        from benchmarks.standin_models import resnet18_graph

        _save(onnx, resnet18_graph(), path)
    return path


def _save(onnx: Any, model: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)


def _names_of(path: Path) -> str:
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == "names"), "")


def _python(args: list[str], timeout: float = 900) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=child_env(),
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


# ------------------------------------------------------------------------------------------ load


@dataclass
class Endpoints:
    vss: Stack | None = None
    vss_two: Stack | None = None  # the b2-* targets: the two-process layout, forced
    docs: Stack | None = None
    peer: Stack | None = None

    def stacks(self) -> list[Stack]:
        return [s for s in (self.vss, self.vss_two, self.docs, self.peer) if s is not None]


def target_spec(target: str, setup: TaskSetup, ends: Endpoints) -> dict[str, Any]:
    """What the load generator needs to reach `target` (see benchmarks/loadgen.py)."""
    name = "yolo" if setup.task == "detection" else "classifier"
    outputs = (DETECTION_OUTPUTS if setup.task == "detection" else CLASSIFICATION_OUTPUTS).split(",")
    if target in ("a", "m", "a-sq", "m-sq"):
        spec = setup.spec_path if not target.endswith("-sq") else setup.square_spec_path
        return {"target": "inprocess" if target.startswith("a") else "model", "spec": str(spec),
                "model_path": str(setup.model_path)}
    if target in ("b-grpc", "b-rest", "b2-grpc", "b2-rest"):
        stack = ends.vss if target.startswith("b-") else ends.vss_two
        assert stack is not None
        kind = target.split("-")[1]
        return {"target": kind, "url": stack.endpoints[kind], "model": name, "outputs": outputs}
    if target == "u-fastapi":
        assert ends.peer is not None
        return {"target": "fastapi", "url": ends.peer.endpoints["fastapi"]}
    assert ends.docs is not None
    protocol = "v1" if target == "c-json" else "grpc-v2"
    return {"target": "v1json", "url": ends.docs.endpoints[protocol], "model": name}


def run_cell(target: str, setup: TaskSetup, ends: Endpoints, frames_dir: Path, concurrency: int,
             requests: int, warmup: int, max_seconds: float) -> tuple[Measurement, dict[str, Any]]:
    spec = target_spec(target, setup, ends)
    flags = [f"--{k}={','.join(v) if isinstance(v, list) else v}" for k, v in spec.items()]
    out = _python(["-m", "benchmarks.loadgen", *flags, "--frames", str(frames_dir),
                   "--concurrency", str(concurrency), "--requests", str(requests), "--warmup", str(warmup),
                   "--max_seconds", str(max_seconds)], timeout=max_seconds * 3 + 600)
    raw = json.loads(out)
    m = Measurement(setup.task, target, concurrency, tuple(raw["latencies_s"]), raw["wall_s"], raw["errors"],
                    raw["truncated"], raw["first_error"])
    m = Measurement(**{**m.__dict__, "round_throughputs": (m.throughput,)})
    return m, raw


def requests_per_round(cfg: Config, concurrency: int) -> int:
    """At least two requests per worker in every round, so that a round measures the steady state and
    not one wave of simultaneous requests."""
    return max(math.ceil(cfg.requests / cfg.rounds), 2 * concurrency)


def run_paired(targets: list[str], setup: TaskSetup, ends: Endpoints, frames_dir: Path, requests: int,
               warmup: int, max_seconds: float) -> tuple[list[Measurement], dict[str, Any]]:
    """Concurrency 1, the targets taking turns request by request (benchmarks/loadgen.py `paired`)."""
    pairs = [{"key": t, **target_spec(t, setup, ends)} for t in targets]
    out = _python(["-m", "benchmarks.loadgen", "--paired", json.dumps(pairs), "--frames", str(frames_dir),
                   "--requests", str(requests), "--warmup", str(warmup), "--max_seconds", str(max_seconds)],
                  timeout=max_seconds * 3 + 900)
    raw = json.loads(out)
    cells = [Measurement(setup.task, key, 1, tuple(r["latencies_s"]), r["wall_s"], r["errors"], r["truncated"],
                         r["first_error"]) for key, r in raw["paired"].items()]
    return cells, raw


def targets_for(task: str, wanted: Sequence[str]) -> list[str]:
    return [t for t in wanted if not (t.endswith("-sq") or t.startswith("u-")) or task == "detection"]


def cells_of(cfg: Config, targets: Sequence[str]) -> int:
    """How many runs `_measure_task` makes for one task: the paired run, then a closed loop per target, round
    and concurrency above 1 (the unit of the progress lines and their estimate)."""
    paired = 1 if [t for t in targets if t in FLOORS or 1 in cfg.concurrency] else 0
    here = [t for t in targets if t not in FLOORS]
    return paired + len([c for c in cfg.concurrency if c != 1]) * cfg.rounds * len(here)


# ------------------------------------------------------------------------------------------ CPU contention


class CpuMeter:
    """How busy the machine was with other people's work while we ran: all CPU time spent on the
    machine (/proc/stat) minus what our processes spent, as a share of the machine's cores. Ours is read
    once every process we started has been stopped and reaped: each is a child of this process (or of
    one that reaps its own), so the kernel has added its CPU time to ours."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy0 = _machine_busy_s()
        self.children0 = _children_cpu_s()
        self.load0 = os.getloadavg()

    def report(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        cores = os.cpu_count() or 1
        busy = _machine_busy_s() - self.busy0
        ours = _children_cpu_s() - self.children0 + _own_cpu_s()
        return {"elapsed_s": round(elapsed, 1), "cores": cores,
                "machine_busy_share": round(busy / (elapsed * cores), 3),
                "our_share": round(ours / (elapsed * cores), 3),
                "others_share": round(max(0.0, busy - ours) / (elapsed * cores), 3),
                "loadavg_start": [round(x, 2) for x in self.load0],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()]}


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------ run


def run(cfg: Config) -> dict[str, Any]:
    cfg.work.mkdir(parents=True, exist_ok=True)
    cfg.out.mkdir(parents=True, exist_ok=True)
    logs = cfg.work / "logs"
    logs.mkdir(exist_ok=True)
    frames_dir = cfg.work / "frames"
    write_frames(frames_dir, 8)
    frames = read_frames(frames_dir)
    meter = CpuMeter()
    print(f"[setup] {len(frames)} frames 1280x720, {sum(map(len, frames)) // len(frames) // 1000} kB each; "
          f"load average {meter.load0[0]:.1f} on {os.cpu_count()} cores", flush=True)
    setups = prepare_models(cfg, frames)
    measurements: list[Measurement] = []
    raw_cells: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    progress = Progress("benchmark", sum(cells_of(cfg, targets_for(s.task, cfg.targets)) for s in setups),
                        every_s=0)
    for setup in setups:
        print(f"[{setup.task}] model {setup.model_path.name}", flush=True)
        targets = targets_for(setup.task, cfg.targets)
        ends = Endpoints()
        try:
            served_name = "yolo" if setup.task == "detection" else "classifier"
            if any(t.startswith("b-") for t in targets):
                ends.vss = start_vss_run(setup.spec_path, served_name, logs, via_vss_run=cfg.via_vss_run)
            if any(t.startswith("b2-") for t in targets):
                ends.vss_two = start_vss_run(setup.spec_path, served_name, logs, via_vss_run=cfg.via_vss_run,
                                             processes="two")
            if "u-fastapi" in targets:
                ends.peer = start_ultralytics_fastapi(setup.model_path, logs)
            if any(t.startswith("c-") for t in targets):
                ends.docs = start_kserve_docs(setup.model_path, "yolo" if setup.task == "detection"
                                              else "classifier", setup.task, setup.names, logs)
            idle = {f"{s.name}/{role}": mem for s in ends.stacks() for role, mem in s.memory_kb().items()}
            cells = _measure_task(cfg, setup, ends, targets, frames_dir, raw_cells, progress)
            measurements += cells
            loaded = {f"{s.name}/{role}": mem for s in ends.stacks() for role, mem in s.memory_kb().items()}
            for cell in raw_cells:  # a closed-loop (a) cell is one process with one model: its peak RSS
                if cell["task"] == setup.task and cell["target"] in ("a", "a-sq") and cell["round"] != "paired":
                    key = f"inprocess/{cell['target']}"
                    peak = cell["loadgen_memory_kb"].get("VmHWM", 0)
                    loaded[key] = {"VmHWM": max(peak, loaded.get(key, {}).get("VmHWM", 0))}
            memory[setup.task] = {"idle_after_load": idle, "after_benchmark": loaded,
                                  "model_file_kb": setup.model_path.stat().st_size // 1024}
        finally:
            for stack in ends.stacks():
                stack.stop()
    contention = meter.report()
    return _report(cfg, setups, measurements, raw_cells, memory, contention)


def _measure_task(cfg: Config, setup: TaskSetup, ends: Endpoints, targets: list[str], frames_dir: Path,
                  raw_cells: list[dict[str, Any]], progress: Progress) -> list[Measurement]:
    """Concurrency 1 as one paired run (every target, request by request in turns: the added latency is
    read to the millisecond on a noisy machine); higher levels as closed loops, in rounds interleaved
    across targets. The model-alone targets run at concurrency 1 only: they give the floor."""
    merged: dict[tuple[str, int], Measurement] = {}
    done = int(progress.done)
    paired = [t for t in targets if t in FLOORS or 1 in cfg.concurrency]
    if paired:
        cells, raw = run_paired(paired, setup, ends, frames_dir, cfg.requests, cfg.warmup,
                                cfg.max_seconds_per_cell * len(paired))
        for m in cells:
            merged[(m.target, 1)] = m
            raw_cells.append({"task": setup.task, "target": m.target, "concurrency": 1, "round": "paired",
                              **raw["paired"][m.target], "loadgen_memory_kb": raw["loadgen_memory_kb"]})
            if m.target in FLOORS:
                setup.record_floor(m.target, m, raw["input_shapes"][m.target])
            note = f" ERRORS {m.errors}: {m.first_error}" if m.errors else ""
            print(f"[{setup.task}] c=1  paired      {m.target:<7} {m.throughput:6.2f} req/s  "
                  f"p50 {m.p(50):7.1f} ms{note}", flush=True)
        done += 1
        progress.update(done, f"{setup.task} c=1 paired {', '.join(paired)}")
    for c in [c for c in cfg.concurrency if c != 1]:
        per_round = requests_per_round(cfg, c)
        here = [t for t in targets if t not in FLOORS]
        for r in range(cfg.rounds):
            order = here[r % len(here):] + here[:r % len(here)]  # rotate: no fixed position
            for target in order:
                # warm-up: every worker's connection made and used before recording
                m, raw = run_cell(target, setup, ends, frames_dir, c, per_round, max(cfg.warmup, c),
                                  cfg.max_seconds_per_cell / cfg.rounds)
                raw_cells.append({"task": setup.task, "target": target, "concurrency": c, "round": r,
                                  **{k: v for k, v in raw.items() if k != "latencies_s"},
                                  "latencies_s": [round(x, 6) for x in raw["latencies_s"]]})
                key = (target, c)
                merged[key] = merged[key].merged(m) if key in merged else m
                note = f" ERRORS {m.errors}: {m.first_error}" if m.errors else ""
                print(f"[{setup.task}] c={c:<2} round {r + 1}/{cfg.rounds} {target:<7} "
                      f"{m.throughput:6.2f} req/s  p50 {m.p(50):7.1f} ms{note}", flush=True)
                done += 1
                progress.update(done, f"{setup.task} c={c} round {r + 1}/{cfg.rounds} {target}")
    return list(merged.values())


def _report(cfg: Config, setups: list[TaskSetup], measurements: list[Measurement],
            raw_cells: list[dict[str, Any]], memory: dict[str, Any], contention: dict[str, Any]) -> dict[str, Any]:
    floors = {k: v for s in setups for k, v in s.floors_ms.items()}
    table = Table(measurements, [TARGETS[k] for k in TARGETS], [b for b in cfg.baselines if b in cfg.targets],
                  floors, FLOOR_OF)
    rows, columns = table.rows(), table.columns()
    criteria = evaluate_criteria(table)
    header = _header(cfg, setups, contention)
    text = to_text(rows, columns)
    memory_text = _memory_text(memory)
    print("\n" + header + "\n" + text + "\n" + memory_text + "\n" + "\n".join(criteria), flush=True)
    (cfg.out / f"{cfg.name}.csv").write_text(to_csv(rows))
    (cfg.out / f"{cfg.name}.md").write_text(
        f"# {cfg.name}\n\n```\n{header}```\n\n" + to_markdown(rows, columns) + "\n## Memory (RSS)\n\n```\n"
        + memory_text + "```\n\n## Targets of the issue\n\n" + "\n".join(f"- {c}" for c in criteria) + "\n")
    raw = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
           "contention": contention, "floors_ms": floors, "memory_kb": memory, "cells": raw_cells,
           "rows": rows}
    (cfg.out / f"{cfg.name}.json").write_text(json.dumps(raw, indent=1, default=str))
    try:
        write_chart(rows, cfg.out / f"{cfg.name}.png", header.splitlines()[0])
    except ImportError:
        print("(matplotlib is not installed: no chart; pip install -e '.[bench]')")
    print(f"\nwritten: {cfg.out}/{cfg.name}.{{csv,md,png,json}}")
    return raw


def _header(cfg: Config, setups: list[TaskSetup], contention: dict[str, Any]) -> str:
    lines = [f"{cfg.name}: {platform.node()} {contention['cores']} cores, {_cpu_model()}; "
             f"{time.strftime('%Y-%m-%d %H:%M')}",
             f"c=1: {cfg.requests} requests per target, targets taking turns request by request (paired); "
             "c>1: " + ", ".join(f"c={c} {cfg.rounds * requests_per_round(cfg, c)}" for c in cfg.concurrency if c > 1)
             + f" requests per target in {cfg.rounds} interleaved rounds; warm-up max({cfg.warmup}, c) per round "
             "excluded; 1280x720 JPEG frames",
             f"CPU taken by other processes during the run: {contention['others_share'] * 100:.0f}% of the machine "
             f"(ours {contention['our_share'] * 100:.0f}%); load average {contention['loadavg_start'][0]} at start, "
             f"{contention['loadavg_end'][0]} at end, over {contention['elapsed_s']:.0f} s"]
    for s in setups:
        shapes = "; ".join(f"{TARGETS[k].label} input {'x'.join(map(str, v))}" for k, v in s.floor_shapes.items())
        lines.append(f"{s.task}: {s.model_path.name} ({shapes})")
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _memory_text(memory: dict[str, Any]) -> str:
    lines = []
    for task, info in memory.items():
        lines.append(f"{task} (model file {info['model_file_kb'] / 1024:.1f} MB):")
        for process, mem in sorted(info["after_benchmark"].items()):
            idle = info["idle_after_load"].get(process, {})
            parts = []
            if idle.get("VmRSS"):
                parts.append(f"RSS ready {idle['VmRSS'] / 1024:.0f} MB")
            if mem.get("VmRSS"):
                parts.append(f"after load {mem['VmRSS'] / 1024:.0f} MB")
            if mem.get("VmHWM"):
                parts.append(f"peak {mem['VmHWM'] / 1024:.0f} MB")
            lines.append(f"  {process:<28} " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def evaluate_criteria(table: Table) -> list[str]:
    """The issue's targets, each as 'met' or 'missed' with the measured figure (never an assertion)."""
    def find(task: str, target: str, c: int) -> Measurement | None:
        return table._find(task, target, c)

    out = []
    levels = sorted({m.concurrency for m in table.measurements})
    top, one = (levels[-1], levels[0]) if levels else (0, 0)
    for task in sorted({m.task for m in table.measurements}):
        for ours, label in (("b-grpc", "gRPC"), ("b-rest", "REST")):
            b, a = find(task, ours, top), find(task, "a", top)
            if b and a:
                ratio = b.throughput / a.throughput
                rounds = ", ".join(f"{r:.2f}" for r in b.round_ratios(a))
                out.append(f"{task}: (b) {label} throughput at c={top} is {ratio:.2f}x (a) (target >= 0.9): "
                           + ("met" if ratio >= 0.9 else "missed") + (f"; round by round {rounds}" if rounds else ""))
            b1, a1 = find(task, ours, one), find(task, "a", one)
            if b1 and a1:
                added = b1.added_p50_ms(a1)
                out.append(f"{task}: (b) {label} adds {added:.1f} ms to p50 at c={one} over (a) "
                           "(target <= 3 ms): " + ("met" if added <= 3 else "missed"))
        out += _peer_criteria(task, levels, find)
        high = [(c, b.throughput / a.throughput) for c in levels if c >= 4
                and (b := find(task, "b-grpc", c)) and (a := find(task, "a", c)) and a.throughput > 0]
        if high:
            out.append(f"{task}: (b) gRPC vs (a) at c >= 4: " + ", ".join(f"c={c} {r:.2f}x" for c, r in high)
                       + " (target >= 0.95x): " + ("met" if min(r for _, r in high) >= 0.95 else "missed"))
        two = [(c, b.throughput / b2.throughput) for c in levels
               if (b := find(task, "b-grpc", c)) and (b2 := find(task, "b2-grpc", c)) and b2.throughput > 0]
        if two:
            b1, b21 = find(task, "b-grpc", one), find(task, "b2-grpc", one)
            p50 = (f"; p50 at c={one} {b1.added_p50_ms(b21):+.1f} ms paired" if b1 and b21 else "")
            out.append(f"{task}: (b) gRPC as served vs (b2) two processes: "
                       + ", ".join(f"c={c} {r:.2f}x" for c, r in two) + p50)
        for base, goal in (("c-json", 5.0), ("c-grpc", 1.5)):
            ratios = [(c, bb.throughput / cc.throughput) for c in levels
                      if (bb := find(task, "b-grpc", c)) and (cc := find(task, base, c)) and cc.throughput > 0]
            if ratios:
                worst = min(r for _, r in ratios)
                out.append(f"{task}: (b) gRPC vs {base}: " + ", ".join(f"c={c} {r:.1f}x" for c, r in ratios)
                           + f" (target >= {goal}x): " + ("met" if worst >= goal else "missed"))
        b1f = find(task, "b-grpc", one)
        if b1f:
            floor = table.floor_of(b1f)
            cell = table.floor_cell(b1f)
            above = b1f.added_p50_ms(cell) if cell else b1f.p(50) - floor
            out.append(f"{task}: (b) gRPC p50 at c={one} is {b1f.p(50):.1f} ms, {b1f.p(50) / floor:.2f}x the "
                       f"model's own compute ({floor:.1f} ms): {above:.1f} ms above the floor")
    return out


def _peer_criteria(task: str, levels: list[int], find: Any) -> list[str]:
    """Issue 17's targets against Ultralytics + FastAPI: c=8 throughput >= 1.2x with a lower p95, and a c=1
    p50 no higher than Ultralytics'."""
    out = []
    for ours, label in (("b-grpc", "gRPC"), ("b-rest", "REST")):
        ratios = [f"c={c} {b.throughput / u.throughput:.2f}x" for c in levels
                  if (b := find(task, ours, c)) and (u := find(task, "u-fastapi", c)) and u.throughput > 0]
        if ratios:
            out.append(f"{task}: (b) {label} throughput vs (u) Ultralytics+FastAPI: " + ", ".join(ratios))
        b8, u8 = find(task, ours, 8), find(task, "u-fastapi", 8)
        if b8 and u8 and u8.throughput > 0:
            ratio = b8.throughput / u8.throughput
            out.append(f"{task}: (b) {label} at c=8: {ratio:.2f}x (u)'s throughput (target >= 1.2), p95 "
                       f"{b8.p(95):.1f} ms against {u8.p(95):.1f} ms (target lower): "
                       + ("met" if ratio >= 1.2 and b8.p(95) < u8.p(95) else "missed"))
        b1, u1 = find(task, ours, 1), find(task, "u-fastapi", 1)
        if b1 and u1:
            out.append(f"{task}: (b) {label} p50 at c=1 is {b1.p(50):.1f} ms, (u) {u1.p(50):.1f} ms "
                       f"({b1.added_p50_ms(u1):+.1f} ms paired; target <= 0): "
                       + ("met" if b1.added_p50_ms(u1) <= 0 else "missed"))
    return out


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="detection,classification")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--requests", type=int, default=48, help="recorded requests per target and level")
    parser.add_argument("--warmup", type=int, default=4,
                        help="unrecorded requests before each round (at least one per worker)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the requests are split into")
    parser.add_argument("--max_seconds_per_cell", type=float, default=300.0,
                        help="a cell that runs longer stops early and is marked truncated")
    parser.add_argument("--detector", type=Path, default=None,
                        help="a YOLO ONNX export (default: the YOLOv8n-shaped stand-in)")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="a classification ONNX model (default: the ResNet-18-shaped stand-in)")
    parser.add_argument("--work", type=Path, default=HERE / ".cache")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="suite")
    parser.add_argument("--via_vss_run", action="store_true",
                        help="start our path with `vss run FILE` itself (its processes then run in sessions of "
                             "their own, which Linux's autogroup scheduler favours on a busy machine)")
    parser.add_argument("--max_in_flight", type=int, default=2,
                        help="our predictor's predictor.batching.maxInFlight (batches run at once)")
    a = parser.parse_args(argv)
    return Config(tasks=a.tasks.split(","), targets=a.targets.split(","),
                  concurrency=[int(c) for c in a.concurrency.split(",")], requests=a.requests,
                  warmup=a.warmup, rounds=a.rounds, max_seconds_per_cell=a.max_seconds_per_cell, work=a.work,
                  out=a.out, name=a.name, detector=a.detector, classifier=a.classifier, via_vss_run=a.via_vss_run,
                  max_in_flight=a.max_in_flight)


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
