"""ONNX Runtime on an NVIDIA GPU, against the seed's targets: detection at 640 p95 < 80 ms and > 100 images/s,
classification at 224 < 20 ms and > 500/s, anomaly < 50 ms and > 200/s, forecasting < 30 ms and > 300/s.

For each model it opens a session per GPU execution provider (TensorRT with FP16 and an engine cache,
then CUDA), checks from ONNX Runtime's own node profile which provider really ran the nodes, and times
`run_with_iobinding`: p50/p95 at batch 1 with the input already on the device and with the host→device
and device→host copies a server pays, then images/s at larger batches. The models are the ones the
predictor serves: `models/artifacts/*.onnx` when present, else the YOLOv8n- and ResNet-18-shaped stand-ins
(benchmarks/standin_models.py), each with the predictor's UINT8 NHWC prelude (normalisation in the graph).

Where ONNX Runtime has no usable GPU provider (a CPU-only `onnxruntime`, or no CUDA 13 libraries) but
PyTorch sees a CUDA device, the same graphs are measured through PyTorch instead, traced to TorchScript in
FP16 (benchmarks/onnx_in_torch.py): the predictor's other runtime, and figures on the GPU at hand.

Needs only numpy, onnx and onnxruntime-gpu (no kserve; torch only for the fallback); finishes inside
--budget_s, skipping what does not fit; exits non-zero only if it crashes. Run through benchmarks/gpu.sh.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "predictors"))  # vss_predictors.prelude without installing the package

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
TORCH = "TorchScript-CUDA-fp16"  # the fallback where ONNX Runtime has no GPU build but PyTorch has CUDA
TARGETS = {  # task: (p95 ms at batch 1, images/s)
    "detection": (80.0, 100.0), "classification": (20.0, 500.0), "anomaly": (50.0, 200.0),
    "forecasting": (30.0, 300.0),
}


@dataclass
class ModelCase:
    task: str
    source: str
    path: Path
    feeds: Callable[[int], dict[str, np.ndarray]]  # batch → inputs
    shape_note: str
    trt_profile: dict[str, str] = field(default_factory=dict)


@dataclass
class Row:
    task: str
    provider: str
    shape: str
    batch: int
    mode: str
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    per_s: float = float("nan")
    note: str = ""


# ------------------------------------------------------------------------------------------ environment


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {"python": platform.python_version(), "onnxruntime": ort.__version__,
                            "ort_device": ort.get_device(), "available": ort.get_available_providers()}
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        info["gpu"] = smi.stdout.strip() or smi.stderr.strip()
    else:
        info["gpu"] = "nvidia-smi not found"
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels (or torch), where present
        try:
            ort.preload_dlls(directory="")
            info["preload_dlls"] = "ok"
        except Exception as exc:
            info["preload_dlls"] = f"failed: {exc}"
    libs = {}
    for lib in ("libcuda.so.1", "libcudart.so.13", "libcublas.so.13", "libcudnn.so.9", "libnvinfer.so.10"):
        try:
            ctypes.CDLL(lib)
            libs[lib] = True
        except OSError:
            libs[lib] = False
    info["libraries"] = libs
    try:  # what the predictor itself would ask for (needs the package's own imports: kserve)
        from vss_predictors.onnx_runtime import gpu_libraries_present, select_providers

        info["predictor_would_ask_for"] = select_providers("gpu", ort.get_available_providers(),
                                                           gpu_libraries_present())
    except Exception as exc:
        info["predictor_would_ask_for"] = f"(vss_predictors.onnx_runtime not importable: {exc})"
    return info


# ------------------------------------------------------------------------------------------ models


def with_prelude(model: onnx.ModelProto, mean: tuple[float, float, float], std: tuple[float, float, float],
                 path: Path) -> Path:
    from vss_api.serving_flags import Normalization
    from vss_predictors.prelude import add_uint8_nhwc_prelude

    onnx.save_model(add_uint8_nhwc_prelude(model, Normalization(mean, std)), str(path))
    return path


def model_cases(work: Path) -> list[ModelCase]:
    from benchmarks.standin_models import resnet18_graph, yolov8n_graph

    artifacts = REPO / "models" / "artifacts"
    cases = []
    rng = np.random.default_rng(0)

    def pixels(h: int, w: int) -> Callable[[int], dict[str, np.ndarray]]:
        return lambda b: {"images": rng.integers(0, 255, (b, h, w, 3), dtype=np.uint8)}

    detector = artifacts / "detector.onnx"
    det_model = onnx.load_model(str(detector)) if detector.is_file() else yolov8n_graph()
    det_source = "models/artifacts/detector.onnx" if detector.is_file() else "YOLOv8n-shaped stand-in"
    det = with_prelude(det_model, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), work / "detector-prelude.onnx")
    trt = {"trt_profile_min_shapes": "images:1x384x640x3", "trt_profile_opt_shapes": "images:8x640x640x3",
           "trt_profile_max_shapes": "images:32x640x640x3"}
    cases.append(ModelCase("detection", det_source, det, pixels(640, 640), "640x640", trt))
    cases.append(ModelCase("detection", det_source, det, pixels(384, 640), "384x640 (1280x720 letterboxed)", trt))

    classifier = artifacts / "classifier.onnx"
    cls_model = onnx.load_model(str(classifier)) if classifier.is_file() else resnet18_graph()
    cls_source = "models/artifacts/classifier.onnx" if classifier.is_file() else "ResNet-18-shaped stand-in"
    cls = with_prelude(cls_model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), work / "classifier-prelude.onnx")
    cases.append(ModelCase("classification", cls_source, cls, pixels(224, 224), "224x224", {
        "trt_profile_min_shapes": "images:1x224x224x3", "trt_profile_opt_shapes": "images:32x224x224x3",
        "trt_profile_max_shapes": "images:64x224x224x3"}))

    for task in ("anomaly", "forecasting"):
        for path in sorted(artifacts.glob(f"*{task[:6]}*.onnx")):
            feeds = generic_feeds(path, rng)
            shape = "; ".join("x".join(map(str, a.shape[1:])) for a in feeds(1).values())
            cases.append(ModelCase(task, f"models/artifacts/{path.name}", path, feeds, f"{path.stem} {shape}"))
    return cases


def generic_feeds(path: Path, rng: np.random.Generator) -> Callable[[int], dict[str, np.ndarray]]:
    """Random inputs of each input's declared shape: the first dynamic dim is the batch, others 1."""
    model = onnx.load_model(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        specs.append((value.name, dims, dtype))

    def feeds(batch: int) -> dict[str, np.ndarray]:
        out = {}
        for name, dims, dtype in specs:
            shape = [(batch if i == 0 else 1) if d == -1 else d for i, d in enumerate(dims)]
            out[name] = rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else \
                rng.integers(0, 2, shape).astype(dtype)
        return out

    return feeds


# ------------------------------------------------------------------------------------------ sessions


def open_session(case: ModelCase, provider: str, work: Path, profile: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(work / f"ort-profile-{case.task}-{provider[:4]}")
    if provider == TRT:
        cache = work / "trt-cache"
        cache.mkdir(exist_ok=True)
        trt_options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True, **case.trt_profile}
        providers: list[Any] = [(TRT, trt_options), (CUDA, {}), CPU]
    elif provider == CUDA:
        providers = [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC"}), CPU]
    else:
        providers = [CPU]
    return ort.InferenceSession(str(case.path), sess_options=options, providers=providers)


def node_placement(profile_file: str) -> dict[str, float]:
    """Share of node kernel time per execution provider, from ONNX Runtime's own profile."""
    with open(profile_file) as f:
        events = json.load(f)
    spent: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            provider = event.get("args", {}).get("provider", "?")
            spent[provider] = spent.get(provider, 0.0) + float(event.get("dur", 0))
    total = sum(spent.values()) or 1.0
    return {p: round(v / total, 4) for p, v in sorted(spent.items(), key=lambda kv: -kv[1])}


def timed(fn: Callable[[], None], runs: int, deadline: float) -> list[float]:
    times = []
    for _ in range(runs):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def bench_case(case: ModelCase, provider: str, work: Path, deadline: float, runs: int,
               batches: list[int]) -> tuple[list[Row], dict[str, Any]]:
    import onnxruntime as ort

    rows: list[Row] = []
    started = time.monotonic()
    session = open_session(case, provider, work, profile=True)
    info: dict[str, Any] = {"session_providers": session.get_providers(),
                            "open_s": round(time.monotonic() - started, 1)}
    if session.get_providers()[0] != provider:
        info["warning"] = f"asked for {provider}, the session got {session.get_providers()}"
    feeds1 = case.feeds(1)
    for _ in range(3):
        session.run(None, feeds1)
    info["placement"] = node_placement(session.end_profiling())
    gpu = provider in (TRT, CUDA)
    device = "cuda" if gpu else "cpu"
    outputs = [o.name for o in session.get_outputs()]

    def bound(feeds: dict[str, np.ndarray], resident: bool) -> Callable[[], None]:
        binding = session.io_binding()
        if resident:
            for name, array in feeds.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, 0))
            for name in outputs:
                binding.bind_output(name, device)

            def run() -> None:
                session.run_with_iobinding(binding)
        else:
            def run() -> None:  # what a server pays: bytes in from the host, results back to it
                for name, array in feeds.items():
                    binding.bind_cpu_input(name, array)
                for name in outputs:
                    binding.bind_output(name, "cpu")
                session.run_with_iobinding(binding)
                binding.copy_outputs_to_cpu()
        return run

    modes = [("device-resident", True), ("with host copies", False)] if gpu else [("host", False)]
    for mode, resident in modes:
        run = bound(feeds1, resident)
        for _ in range(5):
            run()
        times = timed(run, runs, deadline)
        rows.append(Row(case.task, provider, case.shape_note, 1, mode, pct(times, 50), pct(times, 95),
                        1 / statistics.median(times) if times else float("nan")))
    for batch in batches:
        if time.monotonic() > deadline:
            rows.append(Row(case.task, provider, case.shape_note, batch, "with host copies",
                            note="skipped: time budget"))
            continue
        run = bound(case.feeds(batch), resident=False)
        try:
            for _ in range(3):
                run()
            times = timed(run, max(5, runs // 4), deadline)
            rows.append(Row(case.task, provider, case.shape_note, batch, "with host copies", pct(times, 50),
                            pct(times, 95), batch / statistics.median(times) if times else float("nan")))
        except Exception as exc:  # e.g. a batch over the TensorRT profile, or out of memory
            rows.append(Row(case.task, provider, case.shape_note, batch, "with host copies",
                            note=f"failed: {str(exc).splitlines()[0][:80]}"))
    return rows, info


def bench_case_torch(case: ModelCase, deadline: float, runs: int,
                     batches: list[int]) -> tuple[list[Row], dict[str, Any]]:
    """The same graph through PyTorch on CUDA, traced to TorchScript (the predictor's other runtime), FP16."""
    import torch

    from benchmarks.onnx_in_torch import traced

    model = onnx.load_model(str(case.path))
    rows: list[Row] = []
    info: dict[str, Any] = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0)}

    def sync_run(script: Any, x: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                script(x)
            torch.cuda.synchronize()
        return run

    def copying_run(script: Any, array: np.ndarray) -> Callable[[], None]:
        def run() -> None:  # bytes in from the host, results back to it
            with torch.inference_mode():
                script(torch.from_numpy(array).cuda()).cpu()
        return run

    for batch in [1, *batches]:
        if time.monotonic() > deadline:
            rows.append(Row(case.task, TORCH, case.shape_note, batch, "with host copies", note="skipped: time budget"))
            continue
        array = next(iter(case.feeds(batch).values()))
        try:
            started = time.monotonic()
            script = traced(model, torch.from_numpy(array).cuda(), torch.float16)
            info[f"trace_s_batch_{batch}"] = round(time.monotonic() - started, 1)
            modes = [("device-resident", sync_run(script, torch.from_numpy(array).cuda())),
                     ("with host copies", copying_run(script, array))] if batch == 1 else \
                [("with host copies", copying_run(script, array))]
            for mode, run in modes:
                for _ in range(10):
                    run()
                times = timed(run, runs if batch == 1 else max(5, runs // 4), deadline)
                rows.append(Row(case.task, TORCH, case.shape_note, batch, mode, pct(times, 50), pct(times, 95),
                                batch / statistics.median(times) if times else float("nan")))
        except Exception as exc:
            rows.append(Row(case.task, TORCH, case.shape_note, batch, "-",
                            note=f"failed: {str(exc).splitlines()[0][:90]}"))
    return rows, info


def torch_cuda() -> str:
    """'' when PyTorch sees a CUDA device, else why not."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    return "" if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA device"


# ------------------------------------------------------------------------------------------ report


def verdicts(rows: list[Row]) -> list[str]:
    out = []
    for task, (p95_goal, rate_goal) in TARGETS.items():
        for provider in (TRT, CUDA, TORCH):
            mine = [r for r in rows if r.task == task and r.provider == provider and not r.note]
            if not mine:
                continue
            shapes = list(dict.fromkeys(r.shape for r in mine))
            for shape in shapes:
                at = [r for r in mine if r.shape == shape]
                single = [r.p95_ms for r in at if r.batch == 1 and r.mode == "with host copies"]
                best = max(at, key=lambda r: r.per_s)
                p95 = single[0] if single else float("nan")
                ok = p95 < p95_goal and best.per_s > rate_goal
                out.append(f"{task} {shape} on {provider.removesuffix('ExecutionProvider')}: p95 {p95:.1f} ms at "
                           f"batch 1 (target < {p95_goal:.0f}), {best.per_s:.0f}/s at batch {best.batch} "
                           f"(target > {rate_goal:.0f}): {'met' if ok else 'missed'}")
    return out


def print_table(rows: list[Row]) -> None:
    header = f"{'task':<14} {'provider':<21} {'input':<31} {'batch':>5} {'mode':<17} {'p50 ms':>8} {'p95 ms':>8} " \
             f"{'items/s':>9}  note"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.task:<14} {r.provider.removesuffix('ExecutionProvider'):<21} {r.shape:<31} {r.batch:>5} "
              f"{r.mode:<17} {r.p50_ms:8.2f} {r.p95_ms:8.2f} {r.per_s:9.1f}  {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget_s", type=float, default=200.0, help="stop starting new work after this")
    parser.add_argument("--runs", type=int, default=200, help="timed runs at batch 1")
    parser.add_argument("--batches", default="8,32")
    parser.add_argument("--providers", default="TensorrtExecutionProvider,CUDAExecutionProvider",
                        help=f"ONNX Runtime providers to measure; {TORCH} (PyTorch) is measured when none of the "
                             "GPU ones is usable, or when named here")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = parser.parse_args(argv)
    t0 = time.monotonic()
    deadline = t0 + a.budget_s
    work = a.work or Path(tempfile.mkdtemp(prefix="vss-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = environment()
    print("environment:", json.dumps(env, indent=1), flush=True)
    available = set(env["available"])
    wanted = [p for p in a.providers.split(",") if p]
    usable = []
    for provider in wanted:
        if provider == TORCH:
            continue
        if provider not in available:
            print(f"{provider}: not in this onnxruntime build ({env['onnxruntime']}, {env['ort_device']}); "
                  "install onnxruntime-gpu (and its CUDA 13 / cuDNN 9 libraries: pip install "
                  "'onnxruntime-gpu[cuda,cudnn]')")
        elif provider == TRT and not env["libraries"].get("libnvinfer.so.10"):
            print(f"{provider}: libnvinfer.so.10 not loadable (pip install tensorrt-cu13 or a TensorRT "
                  "image): skipped")
        elif provider != CPU and not env["libraries"].get("libcuda.so.1"):
            print(f"{provider}: no NVIDIA driver (libcuda.so.1): skipped")
        else:
            usable.append(provider)
    rows: list[Row] = []
    infos: dict[str, Any] = {}
    try:
        cases = model_cases(work)
    except Exception:
        traceback.print_exc()
        cases = []
    # CUDA first for every model (quick to open), then TensorRT, whose engine builds take the longest
    order = [p for p in (CUDA, TRT, CPU) if p in usable]  # CPU only when asked for (a dry run)
    batches = [int(b) for b in a.batches.split(",") if b]
    for provider in order:
        for case in cases:
            key = f"{case.task} {case.shape_note} {provider}"
            remaining = deadline - time.monotonic()
            if remaining < (60 if provider == TRT else 10):  # a TensorRT engine build takes a minute
                rows.append(Row(case.task, provider, case.shape_note, 1, "-", note="skipped: time budget"))
                continue
            print(f"[{time.monotonic() - t0:5.0f}s] {key} ({case.source})", flush=True)
            try:
                new, info = bench_case(case, provider, work, deadline, a.runs, batches)
                rows += new
                infos[key] = info
                print(f"        session: {info}", flush=True)
            except Exception as exc:
                rows.append(Row(case.task, provider, case.shape_note, 1, "-",
                                note=f"failed: {str(exc).splitlines()[0][:100]}"))
                infos[key] = {"error": traceback.format_exc()[-2000:]}
                print(infos[key]["error"], flush=True)
    gpu_measured = any(p in (CUDA, TRT) for p in order)
    if TORCH in wanted or not gpu_measured:
        reason = torch_cuda()
        if reason:
            print(f"\n{TORCH} fallback: {reason}")
        else:
            print(f"\nno ONNX Runtime GPU provider measured: the same graphs through {TORCH} instead", flush=True)
            for case in cases:
                if deadline - time.monotonic() < 10:
                    rows.append(Row(case.task, TORCH, case.shape_note, 1, "-", note="skipped: time budget"))
                    continue
                print(f"[{time.monotonic() - t0:5.0f}s] {case.task} {case.shape_note} {TORCH}", flush=True)
                try:
                    new, info = bench_case_torch(case, deadline, a.runs, batches)
                    rows += new
                    infos[f"{case.task} {case.shape_note} {TORCH}"] = info
                except Exception as exc:
                    rows.append(Row(case.task, TORCH, case.shape_note, 1, "-",
                                    note=f"failed: {str(exc).splitlines()[0][:100]}"))
    if not rows or all(r.provider == CPU for r in rows):
        print("\nnothing measured on a GPU here.")
    print()
    print_table(rows)
    print()
    for line in verdicts(rows):
        print(line)
    print(f"\nfinished in {time.monotonic() - t0:.0f} s")
    if a.json:
        a.json.write_text(json.dumps({"environment": env, "sessions": infos,
                                      "rows": [r.__dict__ for r in rows]}, indent=1, default=str))
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    raise SystemExit(main())
