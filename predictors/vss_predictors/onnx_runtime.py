"""ONNX Runtime behind the `Runtime` protocol: TensorRT → CUDA → CPU, whichever is really present."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from vss_api.serving_flags import Normalization
from vss_api.v2 import Array
from vss_predictors.errors import UnsupportedModel
from vss_predictors.prelude import add_uint8_nhwc_prelude, image_input
from vss_predictors.runtime import DescribedRuntime, RuntimeInfo, TensorSpec

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_ORT_TYPES = {
    "tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
    "tensor(uint8)": "UINT8", "tensor(int8)": "INT8", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(bool)": "BOOL", "tensor(uint16)": "UINT16",
    "tensor(int16)": "INT16",
}


def _loadable(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def gpu_libraries_present() -> dict[str, bool]:
    """Which GPU execution providers could load here: the driver for CUDA, libnvinfer for TensorRT."""
    cuda = _loadable("libcuda.so.1")
    return {CUDA: cuda, TENSORRT: cuda and any(_loadable(f"libnvinfer.so.{v}") for v in (10, 11))}


def select_providers(device: str, available: Sequence[str], present: Mapping[str, bool]) -> list[str]:
    """Execution providers to ask for, best first; CPU always closes the list as the fallback."""
    wanted = [TENSORRT, CUDA] if device == "gpu" else []
    chosen = [p for p in wanted if p in available and present.get(p, False)]
    return [*chosen, CPU]


def _provider_options(provider: str, cache_dir: Path) -> dict[str, Any]:
    if provider == TENSORRT:
        return {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir)}
    if provider == CUDA:
        return {"cudnn_conv_algo_search": "HEURISTIC"}
    return {}


def _spec(arg: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise UnsupportedModel(f"tensor {arg.name} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape)


def _stage(model: onnx.ModelProto, source: Path, cache_dir: Path) -> Path:
    """Write the model with its prelude next to the runtime's other caches, named by content."""
    data = model.SerializeToString()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{source.stem}-{hashlib.sha256(data).hexdigest()[:16]}.onnx"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)
    return target


def _release_heap() -> None:
    """Hand freed heap pages (the parsed model, the serialised bytes) back to the OS."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


ONNX_SUFFIXES = (".onnx", "")


@dataclass(frozen=True)
class StagedModel:
    """The ONNX file a runtime opens: the model itself, or a copy with the uint8 NHWC prelude in front of an image
    model's input (`prelude`), written next to the runtime's other caches; and the model's metadata."""

    path: Path
    prelude: bool
    metadata: dict[str, str]
    quantized: bool = False  # holds QuantizeLinear/DequantizeLinear or QLinear* nodes

    @classmethod
    def prepare(cls, path: Path, normalization: Normalization | None, cache_dir: Path) -> StagedModel:
        if path.suffix not in ONNX_SUFFIXES:  # no suffix: KServe's /mnt/models for a pvc:// URI naming a file
            raise UnsupportedModel(f"{path}: ONNX models must be .onnx files")
        try:
            model = onnx.load_model(str(path))
        except OSError:  # not there or not readable (yet): the caller may retry
            raise
        except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
            raise UnsupportedModel(f"{path}: not a readable ONNX model: {exc}") from exc
        metadata = {p.key: p.value for p in model.metadata_props}
        quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type.startswith("QLinear")
                        for n in model.graph.node)
        prelude = normalization is not None and image_input(model) is not None
        if not prelude or normalization is None:
            return cls(path, False, metadata, quantized)
        # Runtimes open a file, not bytes: a session built from an in-memory model keeps a second copy of the
        # weights in the heap (measured with ONNX Runtime: 62 -> 22 MB for YOLOv8n, 208 -> 52 MB ResNet-18).
        staged = _stage(add_uint8_nhwc_prelude(model, normalization), path, cache_dir)
        del model
        _release_heap()
        return cls(staged, True, metadata, quantized)


class OnnxRuntime(DescribedRuntime):
    """One `InferenceSession`, with the uint8 NHWC prelude in front of image models."""

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None,
                 normalization: Normalization | None = None,
                 cache_dir: Path = Path("/tmp/vss-trt-cache")) -> None:  # noqa: S108
        staged = StagedModel.prepare(path, normalization, cache_dir)
        self.prelude = staged.prelude
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle intra-op threads spin by default; on a shared CPU (or a pod's CPU quota) that burns the
        # cycles the transformer and the next request need: 1.7x throughput measured (benchmarks/runtime_modes.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        wanted = select_providers(device, ort.get_available_providers(), gpu_libraries_present())
        self._session = self._open(str(staged.path), options, wanted, cache_dir)
        _release_heap()
        got = self._session.get_providers()
        if got[0] != wanted[0] or (device == "gpu" and got[0] == CPU):
            log.warning("asked for %s on device %s, running on %s", wanted, device, got)
        log.info("onnxruntime session ready", extra={"providers": got, "device": device})
        meta = self._session.get_modelmeta()
        self._info = RuntimeInfo(
            backend=f"onnxruntime-{ort.__version__}", providers=tuple(got),
            device="gpu" if got[0] in (TENSORRT, CUDA) else "cpu",
            metadata=dict(meta.custom_metadata_map))
        self._inputs = [_spec(i) for i in self._session.get_inputs()]
        self._outputs = [_spec(o) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]

    @staticmethod
    def _open(model: str, options: ort.SessionOptions, wanted: list[str],
              cache_dir: Path) -> ort.InferenceSession:
        # A provider whose libraries fail at session creation is dropped, and the next one tried.
        last: Exception | None = None
        for start in range(len(wanted)):
            providers = wanted[start:]
            try:
                return ort.InferenceSession(
                    model, sess_options=options, providers=providers,
                    provider_options=[_provider_options(p, cache_dir) for p in providers])
            except Exception as exc:
                log.warning("execution provider %s failed to start: %s", providers[0], exc)
                last = exc
        raise UnsupportedModel(f"onnxruntime could not open the model: {last}")

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        results = self._session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, results, strict=True))
