"""How should the predictor drive ONNX Runtime on this machine? The model alone, with the predictor's own
session (UINT8 prelude, its session options), fed the way each serving strategy would feed it:

  one run at a time, batch 1          what the batcher does when requests trickle in
  one run at a time, merged batch     what the batcher does under load (dynamic batching)
  N runs at once on one session       what in-process callers do (and a batcher with N workers would)
  ... each with intra-op spinning on and off, and N sessions of 1 thread each

Images per second, in interleaved rounds, as ratios against the first mode measured in the same run.

    python benchmarks/runtime_modes.py                 # the YOLOv8n-shaped stand-in at 384x640
    python benchmarks/runtime_modes.py --hw 640,640 --images 48
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx
import onnxruntime as ort

from vss_api.serving_flags import Normalization
from vss_predictors.prelude import add_uint8_nhwc_prelude

HERE = Path(__file__).resolve().parent


def session(model: bytes, *, threads: int | None, spinning: bool) -> ort.InferenceSession:
    """The predictor's session options (vss_predictors/onnx_runtime.py), spinning made explicit."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def throughput(run: Callable[[], int], images: int, callers: int) -> float:
    """Images per second with `callers` threads calling `run` (which returns the images it did)."""
    done = [0]
    lock = threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                if done[0] >= images:
                    return
            n = run()
            with lock:
                done[0] += n

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=HERE / ".cache" / "models" / "yolov8n-standin.onnx")
    parser.add_argument("--hw", default="384,640", help="input height,width")
    parser.add_argument("--images", type=int, default=24, help="images per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="the merged batch size")
    parser.add_argument("--callers", type=int, default=2, help="concurrent runs")
    a = parser.parse_args(argv)
    if not a.model.is_file():
        from benchmarks.standin_models import yolov8n_graph

        a.model.parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(yolov8n_graph(), str(a.model))
    model = add_uint8_nhwc_prelude(onnx.load_model(str(a.model)), Normalization()).SerializeToString()
    h, w = (int(v) for v in a.hw.split(","))
    rng = np.random.default_rng(0)
    one = rng.integers(0, 255, (1, h, w, 3), dtype=np.uint8)
    batch = np.repeat(one, a.batch, axis=0)
    shared = session(model, threads=None, spinning=True)
    quiet = session(model, threads=None, spinning=False)
    singles = [session(model, threads=1, spinning=False) for _ in range(a.callers)]
    local = threading.local()

    def own_single() -> Any:
        if not hasattr(local, "s"):
            with lock:
                local.s = singles[len(handed)]
                handed.append(1)
        return local.s

    lock = threading.Lock()
    handed: list[int] = []
    name = shared.get_inputs()[0].name
    modes: dict[str, tuple[Callable[[], int], int]] = {
        "one run at a time, batch 1": (lambda: len(shared.run(None, {name: one})[0]), 1),
        f"one run at a time, batch {a.batch}": (lambda: len(shared.run(None, {name: batch})[0]), 1),
        f"{a.callers} runs at once, batch 1": (lambda: len(shared.run(None, {name: one})[0]), a.callers),
        "one run at a time, batch 1, no spinning": (lambda: len(quiet.run(None, {name: one})[0]), 1),
        f"{a.callers} runs at once, batch 1, no spinning": (lambda: len(quiet.run(None, {name: one})[0]),
                                                              a.callers),
        f"{a.callers} sessions x 1 thread, batch 1": (lambda: len(own_single().run(None, {name: one})[0]),
                                                        a.callers),
    }
    for run, _ in modes.values():  # warm-up
        run()
    results: dict[str, list[float]] = {k: [] for k in modes}
    keys = list(modes)
    for r in range(a.rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            handed.clear()
            local.__dict__.clear()
            run, callers = modes[key]
            results[key].append(throughput(run, a.images, callers))
    base = results[keys[0]]
    print(f"{a.model.name} at {h}x{w}, {a.images} images per mode and round, {a.rounds} rounds; "
          f"load average {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}")
    print(f"{'mode':<44} {'images/s':>9} {'x first':>8}  round by round")
    for key in keys:
        ratios = [v / b for v, b in zip(results[key], base, strict=True)]
        print(f"{key:<44} {statistics.median(results[key]):9.2f} {statistics.median(ratios):8.2f}  "
              + " ".join(f"{x:.2f}" for x in ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
