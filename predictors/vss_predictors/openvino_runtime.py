"""ONNX models on the CPU through OpenVINO (`spec.predictor.runtime: openvino`), behind the `Runtime` protocol.

The same ONNX file and the same uint8 NHWC prelude as ONNX Runtime (`StagedModel`); OpenVINO reads it directly.
On a 2-core Sapphire Rapids VM, YOLOv8n 640x640 in FP32 runs in 41 ms against ONNX Runtime's 50-54 ms, with the
same outputs (benchmarks/reports/2026-12-07-openvino). `precision: bf16` lets OpenVINO compute in bfloat16 on CPUs with
AMX or AVX512-BF16 (17 ms there), at a measured score drift (docs/runtimes.md); the precision OpenVINO really
chose is what the runtime reports (`providers`: `CPU:bf16` or `CPU:f32`, in `/config` and the load log).

A run that starts alone goes to a model compiled in OpenVINO's latency mode (one stream, every core's thread):
the lowest latency for a lone client. With more than one run allowed at once (`concurrent_runs`, the batcher's
`max_in_flight`), more than one core and the threads left to the runtime, a run that starts while another runs
goes to a second compilation of `concurrent_runs` streams of one thread each: the cores then run whole requests
side by side instead of splitting each and meeting at every layer, which stalls whenever the transformer's
decoding holds one of them (served YOLOv8n on 2 cores: +7-12 % requests/s at c=4 and c=8, c=1 unchanged, 60 MB
more RSS). Each run takes an infer request of its compilation from a pool that holds one per run allowed at once,
so overlapping runs never share a request's buffers."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vss_api.serving_flags import Normalization
from vss_api.v2 import Array
from vss_predictors.errors import UnsupportedModel
from vss_predictors.onnx_runtime import StagedModel
from vss_predictors.runtime import DescribedRuntime, RuntimeInfo, TensorSpec

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
_OV_TYPES = {
    "f32": "FP32", "f16": "FP16", "f64": "FP64", "u8": "UINT8", "i8": "INT8", "i32": "INT32", "i64": "INT64",
    "boolean": "BOOL", "u16": "UINT16", "i16": "INT16",
}


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_bridge_lock = threading.Lock()
_bridge_ready = False


def _init_numpy_bridge(ov: Any) -> None:
    """Make OpenVINO's Python module look up NumPy's C API now, on one thread, with one run of a one-operator
    model. It does so once per process, on the first array `infer` converts, inside a C++ static whose guard it
    holds while it waits for the GIL: two threads whose first runs overlap deadlock (seen in the in-process
    benchmark at c=8: one thread held the GIL and waited for the guard, the other held the guard and waited for
    the GIL; gdb puts both in the same call chain of `infer`'s input conversion that this run takes)."""
    global _bridge_ready
    with _bridge_lock:
        if not _bridge_ready:
            import openvino.opset13 as ops

            x = ops.parameter([1], np.float32)
            tiny = ov.Core().compile_model(ov.Model([ops.relu(x)], [x]), "CPU")
            tiny.create_infer_request().infer({0: np.zeros((1,), np.float32)})
            _bridge_ready = True


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _spec(port: Any) -> TensorSpec:
    type_name = port.get_element_type().get_type_name()
    datatype = _OV_TYPES.get(type_name)
    if datatype is None:
        raise UnsupportedModel(f"tensor {port.get_any_name()} has unsupported type {type_name}")
    shape = tuple(-1 if d.is_dynamic else int(d.get_length()) for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), datatype, shape)


class OpenVinoRuntime(DescribedRuntime):
    def __init__(self, path: Path, *, threads: int | None = None, normalization: Normalization | None = None,
                 concurrent_runs: int = 1, precision: str = "fp32", quantized_ok: bool = True,
                 cache_dir: Path = Path("/tmp/vss-trt-cache")) -> None:  # noqa: S108
        if precision not in PRECISIONS:
            raise UnsupportedModel(f"precision {precision!r} is not one of {PRECISIONS}")
        try:
            import openvino as ov
        except ImportError as exc:
            raise UnsupportedModel("runtime openvino asked for, and the openvino package is not installed "
                                   "(it comes with the serving extra: pip install 'vss-serving[serving]')") from exc
        _init_numpy_bridge(ov)
        staged = StagedModel.prepare(path, normalization, cache_dir)
        if staged.quantized and not quantized_ok:
            raise UnsupportedModel(f"{path} is quantized (QDQ): it keeps the runtime it was calibrated and "
                                   "measured with, ONNX Runtime, unless predictor.runtime asks for openvino")
        self.prelude = staged.prelude
        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = core.read_model(str(staged.path))
            self._compiled = core.compile_model(model, "CPU", config)
            # Runs that overlap get streams of one thread each (see the module's docstring).
            streams = self._streams = max(1, concurrent_runs)
            self._narrow = None if threads or streams < 2 or _available_cores() < 2 else (
                core.compile_model(model, "CPU", {**config, "PERFORMANCE_HINT": "THROUGHPUT",
                                                  "NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": streams}))
        except RuntimeError as exc:  # an operator OpenVINO has no kernel for (ONNX-ML trees, say)
            raise UnsupportedModel(f"{path}: OpenVINO cannot run this model: {str(exc).splitlines()[0]}") from exc
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        got = str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)
        self._info = RuntimeInfo(backend=f"openvino-{ov.__version__.split('-')[0]}",
                                 providers=(f"CPU:{got}",), device="cpu", metadata=staged.metadata)
        self._inputs = [_spec(p) for p in self._compiled.inputs]
        self._outputs = [_spec(p) for p in self._compiled.outputs]
        self._wide: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._narrow_requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(streams):
            self._wide.put(self._compiled.create_infer_request())
            if self._narrow is not None:
                self._narrow_requests.put(self._narrow.create_infer_request())
        self._lock = threading.Lock()
        self._running = 0
        log.info("openvino model compiled", extra={"precision": got, "threads": threads or "all",
                                                   "infer_requests": streams,
                                                   "one_thread_streams": 0 if self._narrow is None else streams})

    @property
    def overlap_streams(self) -> int:
        """Streams of one thread that runs overlapping another get (0: they queue for the latency model)."""
        return 0 if self._narrow is None else self._streams

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        with self._lock:
            alone = self._running == 0
            self._running += 1
        pool = self._wide if alone or self._narrow is None else self._narrow_requests
        request = pool.get()  # never empty for long: at most `concurrent_runs` runs at once
        try:
            # The inputs are read in place (no copy); the outputs are copied out of the request's buffers,
            # which its next run overwrites.
            results = request.infer({name: np.ascontiguousarray(a) for name, a in feeds.items()},
                                    share_inputs=True, share_outputs=False)
            return {spec.name: np.asarray(results[i]) for i, spec in enumerate(self._outputs)}
        finally:
            pool.put(request)
            with self._lock:
                self._running -= 1
