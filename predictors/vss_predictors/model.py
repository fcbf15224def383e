"""The predictor as a KServe `Model`: loads a runtime with retries, warms it up, validates v2 inputs,
answers through the dynamic batcher (echoing the request id and trace context) within the request's deadline, and
stops it on shutdown. A traced request (`vss_api.tracing`) gets a SERVER span, `predictor.infer`, with its time in
the batcher's queue (`batch_wait`) and its batch's run (`infer`) as children."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

from vss_api.deadlines import current_deadline
from vss_api.errors import Overloaded, RequestTimeout
from vss_api.metrics import CLIENT_ERROR, PREDICTOR, PREDICTOR_STAGES, SERVER_ERROR, SUCCESS, Status
from vss_api.request_context import RequestContext, serving
from vss_api.server import binary_output
from vss_api.serving_flags import Normalization, PredictorFlags
from vss_api.serving_metrics import ServingMetrics, track_gpu_memory
from vss_api.tracing import Tracing, annotate, record, traced
from vss_api.v2 import Array
from vss_predictors.batcher import DynamicBatcher, RunTiming
from vss_predictors.errors import InvalidTensor, ModelLoadError, UnsupportedModel
from vss_predictors.runtime import Runtime, RuntimeInfo, TensorSpec, has_dynamic_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictorSettings:
    model_name: str
    version: str
    model_path: Path
    model_format: str = "onnx"
    device: str = "cpu"
    threads: int | None = None
    runtime: str = "auto"  # for ONNX models: auto | onnxruntime | openvino (CPU only)
    precision: str = "fp32"  # fp32 | bf16 (openvino)
    normalization: Normalization | None = None
    max_batch_size: int = 8
    max_latency_ms: float = 5.0
    max_in_flight: int = 2
    max_queue_size: int = 256
    warmup_shape: tuple[int, int] = (640, 640)
    allow_cpu_fallback: bool = False  # device gpu without a usable GPU: serve on CPU (else stay not ready)
    warmup_runs: int = 2
    load_attempts: int = 5
    load_backoff_s: float = 0.5

    @classmethod
    def from_flags(cls, flags: PredictorFlags) -> PredictorSettings:
        """The settings a command line names (the predictor's, or a single-process server's model flags)."""
        return cls(
            model_name=flags.model_name, version=flags.model_version, model_path=Path(flags.model_path),
            model_format=flags.model_format, device=flags.device, threads=flags.threads,
            runtime=flags.runtime, precision=flags.precision, normalization=flags.normalization,
            max_batch_size=flags.max_batch_size,
            max_latency_ms=flags.max_latency_ms, max_in_flight=flags.max_inflight_batches,
            max_queue_size=flags.max_queue_size, warmup_shape=flags.warmup_shape,
            allow_cpu_fallback=flags.allow_cpu_fallback)


MODEL_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".torchscript")}


def model_file(path: Path, model_format: str) -> Path:
    """The file to load for PATH: PATH itself when it is a file (KServe mounts a `pvc://claim/file.onnx` URI as
    the file `/mnt/models`, without its suffix), or the one model file of MODEL_FORMAT in PATH when it is a
    directory (a downloaded or `pvc://claim/dir` model). A missing path raises OSError, so it is retried."""
    if not path.is_dir():
        path.stat()  # FileNotFoundError while a storage initializer or sidecar has not written it yet
        return path
    suffixes = MODEL_SUFFIXES.get(model_format, ())
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in suffixes)
    if len(found) == 1:
        return found[0]
    listing = sorted(p.name for p in path.iterdir())[:20]
    if not found:
        raise UnsupportedModel(f"{path} is a directory with no {'/'.join(suffixes)} file in it "
                               f"(it holds {listing or 'nothing'}): point storageUri at the model file")
    raise UnsupportedModel(f"{path} holds {len(found)} {model_format} files ({[p.name for p in found]}): "
                           f"point storageUri at one of them")


def wants_openvino(settings: PredictorSettings) -> bool:
    """OpenVINO when asked for, or with `auto` for an image model (one that takes pixels: `normalization` is
    set) on the CPU where the package is installed. On a 2-core Sapphire Rapids it ran YOLOv8n in 41 ms against
    ONNX Runtime's 50-54 ms and the project's classifier in 1.45 against 1.93 ms, with the same outputs (scores
    within 1e-6); the series models are a tenth of a millisecond either way, and the anomaly model's trees
    have no OpenVINO kernel (benchmarks/reports/2026-12-07-openvino). A quantized (QDQ) model stays on ONNX
    Runtime with `auto` too: its int8 arithmetic was calibrated and measured there, and OpenVINO's int8 kernels
    round differently (served on OpenVINO, the shipped int8 detector failed the e2e comparison with its
    in-process ONNX Runtime inference)."""
    if settings.runtime != "auto":
        return settings.runtime == "openvino"
    if settings.device != "cpu" or settings.normalization is None:
        return False
    from vss_predictors.openvino_runtime import openvino_available

    return openvino_available()


def open_runtime(settings: PredictorSettings) -> Runtime:
    if settings.model_format not in MODEL_SUFFIXES:
        raise UnsupportedModel(f"unknown model format {settings.model_format!r} (onnx | torchscript)")
    path = model_file(settings.model_path, settings.model_format)
    if settings.model_format == "onnx" and wants_openvino(settings):
        from vss_predictors.openvino_runtime import OpenVinoRuntime

        try:
            return OpenVinoRuntime(path, threads=settings.threads, normalization=settings.normalization,
                                   concurrent_runs=settings.max_in_flight, precision=settings.precision,
                                   quantized_ok=settings.runtime == "openvino")
        except UnsupportedModel as exc:
            if settings.runtime == "openvino":
                raise
            log.info("OpenVINO cannot run the model, ONNX Runtime will: %s", exc)
    if settings.model_format == "onnx":
        from vss_predictors.onnx_runtime import OnnxRuntime

        return OnnxRuntime(path, device=settings.device, threads=settings.threads,
                           normalization=settings.normalization)
    from vss_predictors.torchscript_runtime import TorchScriptRuntime

    return TorchScriptRuntime(path, device=settings.device, threads=settings.threads,
                              normalization=settings.normalization)


def load_with_retries(settings: PredictorSettings, *, sleep: Callable[[float], None] = time.sleep) -> Runtime:
    """A file that is not there or not readable yet (an `OSError`: a storage initializer or model sidecar
    still writing it) is retried with exponential backoff; a file that is there but not a model we serve
    (`UnsupportedModel`) fails at once."""
    delay = settings.load_backoff_s
    for attempt in range(1, settings.load_attempts + 1):
        try:
            return open_runtime(settings)
        except UnsupportedModel as exc:
            raise ModelLoadError(f"cannot serve {settings.model_path}: {exc}") from exc
        except OSError as exc:
            if attempt == settings.load_attempts:
                raise ModelLoadError(
                    f"cannot load {settings.model_path} after {attempt} attempts: {exc}") from exc
            log.warning("model load failed, retrying", extra={"attempt": attempt, "delay_s": delay,
                                                              "error": str(exc)})
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


GPU_UNAVAILABLE = "GpuUnavailable"


def gpu_refusal(settings: PredictorSettings, info: RuntimeInfo) -> str | None:
    """Why a runtime that loaded must not serve: the spec asked for a GPU and the runtime fell back to the CPU,
    which the spec did not allow (`predictor.allowCpuFallback`). None: it may serve."""
    if settings.device != "gpu" or info.device == "gpu" or settings.allow_cpu_fallback:
        return None
    return (f"{GPU_UNAVAILABLE}: device gpu was asked for, but {info.backend} runs on the CPU "
            f"(providers {', '.join(info.providers)}): no usable GPU or GPU libraries in this pod; set "
            "spec.predictor.allowCpuFallback to serve on the CPU")


def warmup_feeds(inputs: list[TensorSpec], hw: tuple[int, int], batch: int = 1) -> dict[str, Array]:
    """Zeros of each input's shape, `batch` rows where the batch is dynamic, with image height/width from `hw`
    where dynamic."""
    feeds: dict[str, Array] = {}
    for spec in inputs:
        shape = list(spec.shape)
        if shape and shape[0] == -1:
            shape[0] = batch
        if len(shape) == 4:  # NHWC (uint8 prelude) or NCHW: fill H and W
            h_axis, w_axis = (1, 2) if shape[3] == 3 else (2, 3)
            shape[h_axis] = hw[0] if shape[h_axis] == -1 else shape[h_axis]
            shape[w_axis] = hw[1] if shape[w_axis] == -1 else shape[w_axis]
        feeds[spec.name] = np.zeros([d if d != -1 else 1 for d in shape], dtype=spec.dtype)
    return feeds


class PredictorModel(kserve.Model):
    def __init__(self, settings: PredictorSettings, metrics: ServingMetrics, tracing: Tracing | None = None) -> None:
        super().__init__(settings.model_name, return_response_headers=True)
        self.settings = settings
        self.metrics = metrics
        self.tracing = tracing or Tracing.off()
        self._span_attributes = {"vss.model.name": settings.model_name, "vss.model.version": settings.version}
        self.runtime: Runtime | None = None
        self.batcher: DynamicBatcher | None = None
        self._labels = {"model_name": settings.model_name, "version": settings.version}
        self.not_ready_reason: str | None = None  # why it stays not ready (`vss_api.server.not_ready_reason`)

    def _warm_up_largest_batches(self, runtime: Runtime) -> int:
        """Run the largest batch the batcher can form, as many at once as it runs (`max_in_flight`), so that the
        runtime's memory arena has grown to its high-water mark before the model is ready: ONNX Runtime's CPU
        arena keeps what the largest batch needed (the classifier: +52 MB for one batch of 16, +57 more for a
        second at once), so without this a pod's memory steps up for good the first time a burst fills a
        batch, minutes or days after it was sized and declared ready. Returns the batch size run (1: none)."""
        batch = self.settings.max_batch_size
        if batch <= 1 or not has_dynamic_batch(runtime):
            return 1
        feeds = warmup_feeds(runtime.inputs, self.settings.warmup_shape, batch)
        with concurrent.futures.ThreadPoolExecutor(self.settings.max_in_flight) as pool:
            for done in [pool.submit(runtime.run, feeds) for _ in range(self.settings.max_in_flight)]:
                done.result()
        return batch

    @property
    def version(self) -> str:
        """The version served, as the transformer's `version`: what `/v2/models/{name}/versions/{v}` takes."""
        return self.settings.version

    def load(self) -> bool:
        if self.not_ready_reason is not None:
            return False  # KServe calls load() again on a model that is not ready: the answer stays the same
        runtime = load_with_retries(self.settings)
        refusal = gpu_refusal(self.settings, runtime.info)
        if refusal is not None:
            self.not_ready_reason = refusal
            log.error("model not ready", extra={"model": self.name, "version": self.settings.version,
                                                "reason": refusal})
            return False
        if self.settings.device == "gpu" and runtime.info.device != "gpu":
            log.warning("device gpu was asked for: serving on the CPU (allowCpuFallback)",
                        extra={"providers": list(runtime.info.providers)})
        feeds = warmup_feeds(runtime.inputs, self.settings.warmup_shape)
        started = time.perf_counter()
        for _ in range(self.settings.warmup_runs):
            runtime.run(feeds)
        largest = self._warm_up_largest_batches(runtime)
        log.info("model ready", extra={
            "model": self.name, "version": self.settings.version, "backend": runtime.info.backend,
            "providers": list(runtime.info.providers), "dynamic_batch": has_dynamic_batch(runtime),
            "warmup_ms": round((time.perf_counter() - started) * 1000, 1), "warmup_largest_batch": largest})
        batch_hist = self.metrics.batch_size.labels(**self._labels)
        self.batcher = DynamicBatcher(
            runtime.run, max_batch_size=self.settings.max_batch_size,
            max_latency_s=self.settings.max_latency_ms / 1000, merge=has_dynamic_batch(runtime),
            max_in_flight=self.settings.max_in_flight, max_queue_size=self.settings.max_queue_size,
            on_batch=batch_hist.observe)
        batcher = self.batcher
        self.metrics.queue_depth.labels(**self._labels).set_function(lambda: batcher.waiting)
        self.runtime = runtime
        self.metrics.start_counting(self.name, self.settings.version, PREDICTOR)
        if runtime.info.device == "gpu":
            track_gpu_memory(self.metrics, self.name, self.settings.version)
        self.ready = True
        return True

    def stop(self) -> None:
        """Called by KServe's ModelServer on SIGTERM/SIGINT (`ModelRepository.unload`), on the event loop's
        thread: requests not yet run fail with 503/UNAVAILABLE, running batches finish, the batch threads
        exit after them."""
        if self.batcher is not None:
            self.batcher.close()
        super().stop()
        log.info("model stopped", extra={"model": self.name, "version": self.settings.version})

    def describe(self) -> dict[str, Any]:
        """Triton-style model configuration: tensors, what the runtime really got, the model's metadata."""
        runtime = self._runtime()
        return {
            "name": self.name, "version": self.settings.version, "backend": runtime.info.backend,
            "inputs": [t.as_v2_metadata() for t in runtime.inputs],
            "outputs": [t.as_v2_metadata() for t in runtime.outputs],
            "max_batch_size": self.settings.max_batch_size if has_dynamic_batch(runtime) else 0,
            "parameters": {"providers": list(runtime.info.providers), "device": runtime.info.device,
                           "metadata": dict(runtime.info.metadata)},
        }

    def get_input_types(self) -> list[dict[str, Any]]:
        return [t.as_v2_metadata() for t in self._runtime().inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [t.as_v2_metadata() for t in self._runtime().outputs]

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise kserve.errors.ModelNotReady(self.name, self.not_ready_reason)
        return self.runtime

    def feeds(self, request: InferRequest) -> dict[str, Array]:
        """The request's tensors as numpy arrays, checked against the model's inputs."""
        runtime = self._runtime()
        expected = {t.name: t for t in runtime.inputs}
        given = {t.name: t for t in request.inputs}
        if set(given) != set(expected):
            raise InvalidTensor(f"model {self.name!r} takes inputs {sorted(expected)}, got {sorted(given)}")
        feeds: dict[str, Array] = {}
        for name, spec in expected.items():
            tensor = given[name]
            if tensor.datatype != spec.datatype:
                raise InvalidTensor(f"input {name!r} must be {spec.datatype}, got {tensor.datatype}")
            shape = tuple(int(d) for d in tensor.shape)
            if not spec.accepts_shape(shape):
                raise InvalidTensor(f"input {name!r} must have shape {list(spec.shape)} (-1: any), "
                                    f"got {list(shape)}")
            if shape and shape[0] == 0:
                raise InvalidTensor(f"input {name!r} is an empty batch")
            try:
                feeds[name] = tensor.as_numpy()
            except (ValueError, TypeError) as exc:
                raise InvalidTensor(f"input {name!r}: data does not match shape {list(shape)}: {exc}"
                                    ) from exc
        batches = {a.shape[0] for a in feeds.values() if a.ndim}
        if len(batches) > 1:
            raise InvalidTensor(f"inputs disagree on the batch size: {sorted(batches)}")
        return feeds

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("the predictor speaks the v2 protocol: send v2 tensors to /v2/models/"
                               f"{self.name}/infer")
        context = RequestContext.from_headers(headers, body_id=payload.id)
        with serving(context), self.tracing.request("predictor.infer", context, {
                **self._span_attributes, "vss.request.id": context.request_id}):
            outputs = await self._infer(payload)
        if response_headers is not None:
            response_headers.update(context.headers())
        result = [binary_output(name, array) for name, array in outputs.items()]
        return InferResponse(response_id=payload.id or context.request_id, model_name=self.name,
                             infer_outputs=result, model_version=self.settings.version,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)

    async def _infer(self, payload: InferRequest) -> dict[str, Array]:
        return await self.infer_tensors(payload, deadline=current_deadline())

    async def infer_tensors(self, payload: InferRequest | Mapping[str, Array], *,
                            deadline: float | None) -> dict[str, Array]:
        """The outputs for a v2 request's tensors (checked against the model's inputs first), or for arrays a
        single-process server's transformer made to the model's inputs itself (`vss_predictors.in_process`),
        through the batcher within `deadline`, counted and traced as the predictor's either way."""
        started = time.perf_counter()
        status: Status = SUCCESS
        try:
            feeds = self.feeds(payload) if isinstance(payload, InferRequest) else payload
            assert self.batcher is not None
            timing = RunTiming() if traced() else None
            try:
                outputs = await self.batcher.submit(feeds, deadline=deadline, timing=timing)
            finally:
                if timing is not None:
                    self._record_batch(timing, rows=int(next(iter(feeds.values())).shape[0]))
        except InvalidInput:
            status = CLIENT_ERROR
            raise
        except (Overloaded, RequestTimeout) as exc:  # counted, but one log line each would flood under overload
            status = SERVER_ERROR
            log.debug("request refused", extra={"model": self.name, "reason": str(exc)})
            raise
        except Exception as exc:
            status = SERVER_ERROR
            log.error("inference failed", extra={"model": self.name, "error": f"{type(exc).__name__}: {exc}"})
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(**self._labels, component=PREDICTOR, status=status).inc()
            self.metrics.duration.labels(**self._labels, component=PREDICTOR, stage=PREDICTOR_STAGES[0]).observe(
                seconds)
        if log.isEnabledFor(logging.DEBUG):  # one line per request: off at the default INFO level
            log.debug("inference done", extra={"model": self.name, "rows": int(next(iter(feeds.values())).shape[0]),
                                               "duration_ms": round(seconds * 1000, 2)})
        return outputs

    def _record_batch(self, timing: RunTiming, *, rows: int) -> None:
        """The request's `batch_wait` (queued until its batch started, or until now if it never did) and
        `infer` (its batch's run) spans, from what the batcher timed."""
        batch: dict[str, str | int] = {**self._span_attributes, "vss.request.rows": rows}
        if timing.started_ns:
            batch |= {"vss.batch.size": timing.batch_rows, "vss.batch.requests": timing.batch_requests}
            annotate({"vss.batch.size": timing.batch_rows})
        record("batch_wait", timing.queued_ns, timing.started_ns or time.time_ns(), batch)
        if timing.started_ns:
            record("infer", timing.started_ns, timing.ended_ns or time.time_ns(), batch)
