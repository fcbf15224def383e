"""The command lines of the two data-plane processes for a VSSModel version, both ways: `predictor_args` and
`transformer_args` write them from the spec (for `render`, the containers of an InferenceService, and for
`vss run`, local processes), `predictor_parser`/`transformer_parser` read them in the containers. One module
owns every flag name, so a renamed flag fails a unit test (tests/unit/vss_api/test_serving_flags.py), not
a pod.

The parsers take KServe's `model_server.parser` as a parent in the containers: it owns `--model_name`,
`--http_port`, `--grpc_port`, `--predictor_host`, `--predictor_protocol`, `--enable_predictor_health_check`,
`--predictor_request_timeout_seconds` and the gRPC message limits, which KServe's `ModelServer` reads itself."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from vss_api.vssmodel import (
    AnomalyParams,
    ClassificationParams,
    DetectionParams,
    Device,
    ForecastingParams,
    ModelVersion,
    Processes,
    SpecModel,
    Task,
    VSSModelSpec,
    describe_validation_error,
)

# Sensor windows go to the model as FP32 readings: no image prelude in front of it.
TIME_SERIES = frozenset({Task.ANOMALY, Task.FORECASTING})
TASK_PARAMS: dict[Task, type[SpecModel]] = {
    Task.DETECTION: DetectionParams, Task.CLASSIFICATION: ClassificationParams,
    Task.ANOMALY: AnomalyParams, Task.FORECASTING: ForecastingParams,
}
MODEL_FORMATS = ("onnx", "torchscript")
DEVICES = ("cpu", "gpu")
RUNTIMES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
PREDICTOR_PROTOCOL = "grpc-v2"  # the transformer -> predictor hop: binary tensors over gRPC, never JSON


@dataclass(frozen=True)
class Normalization:
    """Per-channel `(x / 255 - mean) / std` for RGB pixels in 0..255, as the predictor's `--normalize`."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def parse(cls, text: str) -> Normalization:
        """`MEAN_R,MEAN_G,MEAN_B:STD_R,STD_G,STD_B`."""
        try:
            mean_text, std_text = text.split(":")
            mean = tuple(float(v) for v in mean_text.split(","))
            std = tuple(float(v) for v in std_text.split(","))
        except ValueError as exc:
            raise ValueError(f"--normalize must look like 0.485,0.456,0.406:0.229,0.224,0.225, got {text!r}"
                             ) from exc
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"--normalize needs 3 means and 3 positive stds, got {text!r}")
        return cls(mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))

    def format(self) -> str:
        return ",".join(repr(v) for v in self.mean) + ":" + ",".join(repr(v) for v in self.std)


DETECTION_NORMALIZATION = Normalization()  # YOLO exports take RGB / 255


def normalization(spec: VSSModelSpec) -> Normalization | None:
    """What the predictor's in-graph prelude does to UINT8 pixels; None for the sensor tasks."""
    if spec.task in TIME_SERIES:
        return None
    if spec.task is Task.CLASSIFICATION:
        p = spec.classification
        return Normalization(mean=(p.mean[0], p.mean[1], p.mean[2]), std=(p.std[0], p.std[1], p.std[2]))
    return DETECTION_NORMALIZATION


def warmup_shape(spec: VSSModelSpec) -> tuple[int, int]:
    """The input the predictor warms up with: (H, W) of an image, (steps, features) of a sensor window."""
    if spec.task is Task.ANOMALY:
        return spec.anomaly.window, len(spec.anomaly.features)
    if spec.task is Task.FORECASTING:
        return spec.forecasting.lookback, len(spec.forecasting.features)
    if spec.task is Task.CLASSIFICATION:
        size = spec.classification.input_size
        return size, size
    size = spec.detection.input_size
    # A 16:9 camera frame letterboxed to a stride-multiple rectangle, the common case at run time.
    return ((size * 9 // 16 + 31) // 32 * 32, size) if spec.detection.rectangular else (size, size)


def _shape(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected H,W (two integers), got {text!r}") from exc
    return h, w


def _format_shape(shape: tuple[int, int]) -> str:
    return f"{shape[0]},{shape[1]}"


# --- tracing (both processes) --------------------------------------------------------------------------

TRACES_PATH = "/v1/traces"  # OTLP/HTTP's traces path under a collector's base URL


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL (`http://collector:4318` -> `.../v1/traces`); a URL
    that already ends in the traces path is kept."""
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


@dataclass(frozen=True)
class TracingFlags:
    """Where a serving process sends its spans (`endpoint`, the full OTLP/HTTP traces URL; None: tracing off)
    and the share of the traces starting there that it keeps (`vss_api.tracing`)."""

    endpoint: str | None = None
    sampling_ratio: float = 1.0

    def args(self) -> list[str]:
        if self.endpoint is None:
            return []
        return ["--otlp_traces_endpoint", self.endpoint, "--trace_sampling_ratio", repr(self.sampling_ratio)]


def tracing_flags(spec: VSSModelSpec, default_endpoint: str | None = None) -> TracingFlags:
    """`spec.tracing` as both processes are told it; `default_endpoint` (the operator's, or `vss run
    --tracing-endpoint`) serves a spec that names no collector."""
    endpoint = spec.tracing.endpoint or default_endpoint
    return TracingFlags(None if endpoint is None else traces_url(endpoint), spec.tracing.sampling_ratio)


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}")
    return value


def _tracing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--otlp_traces_endpoint", default=None,
                        help="OTLP/HTTP traces URL (http://collector:4318/v1/traces); tracing is off without it")
    parser.add_argument("--trace_sampling_ratio", type=_ratio, default=1.0,
                        help="share of the traces starting here that are kept (a caller's sampled flag wins)")


def _tracing_flags(args: argparse.Namespace) -> TracingFlags:
    return TracingFlags(args.otlp_traces_endpoint or None, args.trace_sampling_ratio)


# gRPC reads its message limits as a C int: 2**31 or more fails the channel or server at start.
GRPC_MAX_MESSAGE_BYTES = (1 << 31) - 1
# A predictor batch holds several requests' tensors, and decoded frames are larger than their JPEGs.
BATCH_MESSAGE_FACTOR = 8


def grpc_message_bytes(max_request_bytes: int) -> int:
    """The gRPC send/receive limit between transformer and predictor for a `transformer.maxRequestBytes`:
    a batch's worth of it, at most what gRPC can hold (from 256 MiB the product would overflow)."""
    return min(max_request_bytes * BATCH_MESSAGE_FACTOR, GRPC_MAX_MESSAGE_BYTES)


# --- predictor -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PredictorFlags:
    """What the predictor container is told; `predictor_args` writes it, `predictor_flags` reads it back."""

    model_name: str
    model_version: str
    model_path: str
    model_format: str
    device: str
    normalization: Normalization | None
    warmup_shape: tuple[int, int]
    max_batch_size: int
    max_latency_ms: float
    max_inflight_batches: int
    max_queue_size: int
    max_concurrency: int  # REST requests served at once (`vss_api.server.ConcurrencyLimit`)
    threads: int | None
    http_port: int
    grpc_port: int
    max_message_bytes: int  # gRPC receive and send limits: a batch of frames is larger than one request
    tracing: TracingFlags = TracingFlags()
    allow_cpu_fallback: bool = False  # device gpu without a usable GPU: serve on CPU instead of staying not ready
    runtime: str = "auto"  # what runs an ONNX model: auto | onnxruntime | openvino
    precision: str = "fp32"  # fp32 | bf16 (openvino on CPUs with AMX or AVX512-BF16)

    def args(self) -> list[str]:
        return [
            "--model_name", self.model_name, "--model_version", self.model_version,
            *self.model_args(),
            "--max_concurrency", str(self.max_concurrency),
            "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port),
            "--grpc_max_receive_message_length", str(self.max_message_bytes),
            "--grpc_max_send_message_length", str(self.max_message_bytes),
            *self.tracing.args(),
        ]

    def model_args(self) -> list[str]:
        """The flags of the model and its batcher alone: what a single-process server adds to the transformer's."""
        return [
            "--model_path", self.model_path, "--model_format", self.model_format,
            "--device", self.device,
            *([] if self.normalization is None else ["--normalize", self.normalization.format()]),
            "--warmup_shape", _format_shape(self.warmup_shape),
            "--max_batch_size", str(self.max_batch_size),
            "--max_latency_ms", str(self.max_latency_ms),
            "--max_inflight_batches", str(self.max_inflight_batches),
            "--max_queue_size", str(self.max_queue_size),
            *([] if self.threads is None else ["--threads", str(self.threads)]),
            *(["--allow_cpu_fallback"] if self.allow_cpu_fallback else []),
            *([] if self.runtime == "auto" else ["--runtime", self.runtime]),
            *([] if self.precision == "fp32" else ["--precision", self.precision]),
        ]


def predictor_concurrency(spec: VSSModelSpec) -> int:
    """The predictor's REST limit: as many requests as it can hold (queued, plus running batches of single
    requests), so a full queue answers its own 503 with the reason, and bodies beyond it are never read."""
    batching = spec.predictor.batching
    return batching.max_queue_size + batching.max_in_flight * batching.max_batch_size


def predictor_flags_for(spec: VSSModelSpec, version: ModelVersion, model_path: str, http_port: int,
                        grpc_port: int, *, model_name: str, tracing: TracingFlags | None = None) -> PredictorFlags:
    batching = spec.predictor.batching
    return PredictorFlags(
        model_name=model_name, model_version=version.name, model_path=model_path,
        model_format=version.format.value, device=spec.predictor.device.value,
        normalization=normalization(spec), warmup_shape=warmup_shape(spec),
        max_batch_size=batching.max_batch_size, max_latency_ms=batching.max_latency_ms,
        max_inflight_batches=batching.max_in_flight, max_queue_size=batching.max_queue_size,
        max_concurrency=predictor_concurrency(spec), threads=spec.predictor.threads, http_port=http_port,
        grpc_port=grpc_port, max_message_bytes=grpc_message_bytes(spec.transformer.max_request_bytes),
        tracing=tracing or tracing_flags(spec), allow_cpu_fallback=spec.predictor.allow_cpu_fallback,
        runtime=spec.predictor.runtime.value, precision=spec.predictor.precision.value)


def predictor_args(spec: VSSModelSpec, version: ModelVersion, model_path: str, http_port: int,
                   grpc_port: int, *, model_name: str, tracing: TracingFlags | None = None) -> list[str]:
    return predictor_flags_for(spec, version, model_path, http_port, grpc_port, model_name=model_name,
                               tracing=tracing).args()


def predictor_parser(*parents: argparse.ArgumentParser, description: str | None = None
                     ) -> argparse.ArgumentParser:
    """The predictor's parser: ours on top of `parents` (KServe's in the container). Without parents it
    declares KServe's flags that `predictor_args` writes, so the flags can be read back without KServe."""
    # No abbreviations: a flag renamed on one side must fail, not match a prefix of another.
    parser = argparse.ArgumentParser(parents=list(parents), description=description, allow_abbrev=False)
    if not parents:
        _kserve_flags(parser, transformer=False)
    parser.add_argument("--model_version", default="v1")
    _predictor_model_arguments(parser)
    parser.add_argument("--max_concurrency", type=int, default=1024,
                        help="REST requests served at once; one more gets 503 (GETs are not counted)")
    parser.add_argument("--max_request_bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--log_level", default="INFO")
    _tracing_arguments(parser)
    return parser


def _predictor_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `PredictorFlags.model_args`, read by the predictor and by a single-process server."""
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--model_format", choices=MODEL_FORMATS, default="onnx")
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs an ONNX model: onnxruntime, openvino (CPU), or auto (openvino for an "
                             "image model on the CPU, else onnxruntime)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="bf16: openvino computes in bfloat16 where the CPU has AMX or AVX512-BF16")
    parser.add_argument("--allow_cpu_fallback", action="store_true",
                        help="with --device gpu and no usable GPU, serve on CPU instead of staying not ready")
    parser.add_argument("--normalize", type=Normalization.parse, default=None,
                        help="MEAN:STD per RGB channel; takes UINT8 NHWC pixels and normalises in the graph")
    parser.add_argument("--max_batch_size", type=int, default=8)
    parser.add_argument("--max_latency_ms", type=float, default=5.0)
    parser.add_argument("--max_inflight_batches", type=int, default=2, choices=range(1, 9),
                        metavar="{1..8}", help="batches run at once")
    parser.add_argument("--max_queue_size", type=int, default=256,
                        help="requests that may wait for a batch; one more gets 503 / UNAVAILABLE")
    parser.add_argument("--warmup_shape", type=_shape, default=(640, 640), help="H,W of the warm-up input")


def predictor_flags(args: argparse.Namespace) -> PredictorFlags:
    return PredictorFlags(
        model_name=args.model_name, model_version=args.model_version, model_path=str(args.model_path),
        model_format=args.model_format, device=args.device, normalization=args.normalize,
        warmup_shape=args.warmup_shape, max_batch_size=args.max_batch_size,
        max_latency_ms=args.max_latency_ms, max_inflight_batches=args.max_inflight_batches,
        max_queue_size=args.max_queue_size, max_concurrency=args.max_concurrency, threads=args.threads,
        http_port=args.http_port, grpc_port=args.grpc_port,
        max_message_bytes=args.grpc_max_receive_message_length, tracing=_tracing_flags(args),
        allow_cpu_fallback=args.allow_cpu_fallback, runtime=args.runtime, precision=args.precision)


# --- transformer ---------------------------------------------------------------------------------------

# How long the transformer's load() waits for the predictor (a GPU warm-up or TensorRT build is slow); the
# rendered startup probes give both containers at least this long before the kubelet may restart them.
PREDICTOR_WAIT_S = 300.0

# The result cache's Redis URL reaches the transformer in this environment variable (in a pod from the Secret
# `transformer.cache.secretRef` names; for `vss run` from the caller's environment), never on the command line,
# where `ps` and the InferenceService would show its password.
CACHE_URL_ENV = "VSS_CACHE_URL"


@dataclass(frozen=True)
class CacheFlags:
    """`transformer.cache` as the transformer is told it, less the URL (in $VSS_CACHE_URL)."""

    ttl_seconds: int = 3600
    max_entry_bytes: int = 1024 * 1024
    timeout_ms: int = 50

    def args(self) -> list[str]:
        return ["--cache", "--cache_ttl_seconds", str(self.ttl_seconds),
                "--cache_max_entry_bytes", str(self.max_entry_bytes), "--cache_timeout_ms", str(self.timeout_ms)]


@dataclass(frozen=True)
class TransformerFlags:
    """What the transformer container is told; `transformer_args` writes it, `transformer_flags` reads it."""

    model_name: str
    model_version: str
    task: Task
    params: SpecModel  # the task's block of spec.transformer, validated again on the way in
    predictor_grpc: str
    predictor_rest: str
    max_request_bytes: int
    max_concurrency: int
    request_timeout_ms: int
    predictor_timeout_s: int
    http_port: int
    grpc_port: int
    # The vision tasks' limits before work (`vss_transformers.images.ImageRequests`).
    max_image_pixels: int = 7680 * 4320
    max_batch_images: int = 64
    max_batch_pixels: int = 2 * 7680 * 4320
    cache: CacheFlags | None = None  # the result cache, off when None
    tracing: TracingFlags = TracingFlags()

    def args(self, *, hop: bool = True) -> list[str]:
        """The command line; without `hop`, less the flags naming the predictor to call (a single-process
        server runs the model itself)."""
        params = self.params.model_dump(mode="json", by_alias=True, exclude_none=True)
        return [
            "--model_name", self.model_name, "--model_version", self.model_version,
            "--task", self.task.value, "--params", json.dumps(params, separators=(",", ":")),
            *(["--predictor_host", self.predictor_grpc, "--predictor_protocol", PREDICTOR_PROTOCOL,
               "--predictor_rest_host", self.predictor_rest, "--enable_predictor_health_check"] if hop else []),
            "--predictor_request_timeout_seconds", str(self.predictor_timeout_s),
            "--max_request_bytes", str(self.max_request_bytes),
            "--max_concurrency", str(self.max_concurrency),
            "--request_timeout_ms", str(self.request_timeout_ms),
            "--max_image_pixels", str(self.max_image_pixels),
            "--max_batch_images", str(self.max_batch_images),
            "--max_batch_pixels", str(self.max_batch_pixels),
            "--grpc_max_receive_message_length", str(self.max_request_bytes),
            "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port),
            *([] if self.cache is None else self.cache.args()),
            *self.tracing.args(),
        ]


def transformer_flags_for(spec: VSSModelSpec, model_name: str, predictor_grpc: str, predictor_rest: str,
                          http_port: int, grpc_port: int, *, version: str | None = None,
                          tracing: TracingFlags | None = None) -> TransformerFlags:
    block: SpecModel = getattr(spec.transformer, spec.task.value)
    cache = spec.transformer.cache
    return TransformerFlags(
        model_name=model_name, model_version=version or spec.version, task=spec.task, params=block,
        predictor_grpc=predictor_grpc, predictor_rest=predictor_rest,
        max_request_bytes=spec.transformer.max_request_bytes, max_concurrency=spec.transformer.max_concurrency,
        request_timeout_ms=spec.transformer.request_timeout_ms,
        predictor_timeout_s=spec.transformer.predictor_timeout_seconds, http_port=http_port, grpc_port=grpc_port,
        max_image_pixels=spec.transformer.max_image_pixels, max_batch_images=spec.transformer.max_batch_images,
        max_batch_pixels=spec.transformer.max_batch_pixels,
        cache=None if cache is None else CacheFlags(ttl_seconds=cache.ttl_seconds,
                                                    max_entry_bytes=cache.max_entry_bytes,
                                                    timeout_ms=cache.timeout_ms),
        tracing=tracing or tracing_flags(spec))


def transformer_args(spec: VSSModelSpec, model_name: str, predictor_grpc: str, predictor_rest: str,
                     http_port: int, grpc_port: int, *, version: str | None = None,
                     tracing: TracingFlags | None = None) -> list[str]:
    return transformer_flags_for(spec, model_name, predictor_grpc, predictor_rest, http_port, grpc_port,
                                 version=version, tracing=tracing).args()


def transformer_parser(*parents: argparse.ArgumentParser, description: str | None = None, hop: bool = True
                       ) -> argparse.ArgumentParser:
    """The transformer's parser; without `hop`, that of a single-process server, which names no predictor."""
    # No abbreviations: a flag renamed on one side must fail, not match a prefix of another.
    parser = argparse.ArgumentParser(parents=list(parents), description=description, allow_abbrev=False)
    if not parents:
        _kserve_flags(parser, transformer=True)
    parser.add_argument("--task", choices=[t.value for t in Task], required=True)
    parser.add_argument("--params", default="{}", help="the task's transformer block of the VSSModel, JSON")
    parser.add_argument("--model_version", default="v1")
    if hop:
        parser.add_argument("--predictor_rest_host", required=True, help="host:port of the predictor's REST")
    parser.add_argument("--max_request_bytes", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--max_image_pixels", type=int, default=7680 * 4320,
                        help="largest image (width x height), read from its header before decoding")
    parser.add_argument("--max_batch_images", type=int, default=64, help="most images in one request")
    parser.add_argument("--max_batch_pixels", type=int, default=2 * 7680 * 4320,
                        help="most pixels the images of one request hold together")
    parser.add_argument("--max_concurrency", type=int, default=64,
                        help="requests served at once, REST and gRPC; one more gets 503 / UNAVAILABLE")
    parser.add_argument("--request_timeout_ms", type=int, default=30_000,
                        help="deadline of a request that brings none shorter")
    parser.add_argument("--predictor_wait_s", type=float, default=PREDICTOR_WAIT_S,
                        help="how long loading waits for the predictor's model config before it gives up")
    parser.add_argument("--cache", action="store_true",
                        help=f"answer repeated inputs from the Redis at ${CACHE_URL_ENV} (transformer.cache)")
    parser.add_argument("--cache_ttl_seconds", type=int, default=CacheFlags.ttl_seconds)
    parser.add_argument("--cache_max_entry_bytes", type=int, default=CacheFlags.max_entry_bytes)
    parser.add_argument("--cache_timeout_ms", type=int, default=CacheFlags.timeout_ms)
    parser.add_argument("--log_level", default="INFO")
    _tracing_arguments(parser)
    return parser


class InvalidFlags(ValueError):
    """A container command line that does not describe a servable model (the message says which flag)."""


def task_params(task: Task, params_json: str) -> SpecModel:
    """The `--params` JSON of a task, validated by the same schema as the VSSModel's transformer block."""
    try:
        raw: Any = json.loads(params_json)
    except json.JSONDecodeError as exc:
        raise InvalidFlags(f"--params is not JSON: {exc}") from exc
    try:
        return TASK_PARAMS[task].model_validate(raw)
    except ValidationError as exc:
        raise InvalidFlags(f"--params for {task.value}: {describe_validation_error(exc)}") from exc


def transformer_flags(args: argparse.Namespace, *, hop: bool = True) -> TransformerFlags:
    """The transformer's flags; without `hop`, a single-process server's, whose predictor is IN_PROCESS."""
    if hop and not args.predictor_host:
        raise InvalidFlags("--predictor_host (the predictor's gRPC host:port) is required")
    if hop and args.predictor_protocol != PREDICTOR_PROTOCOL:
        raise InvalidFlags(f"--predictor_protocol must be {PREDICTOR_PROTOCOL}, got {args.predictor_protocol!r}")
    task = Task(args.task)
    return TransformerFlags(
        model_name=args.model_name, model_version=args.model_version, task=task,
        params=task_params(task, args.params), predictor_grpc=args.predictor_host if hop else IN_PROCESS,
        predictor_rest=args.predictor_rest_host if hop else IN_PROCESS, max_request_bytes=args.max_request_bytes,
        max_concurrency=args.max_concurrency, request_timeout_ms=args.request_timeout_ms,
        predictor_timeout_s=args.predictor_request_timeout_seconds, http_port=args.http_port,
        grpc_port=args.grpc_port, max_image_pixels=args.max_image_pixels, max_batch_images=args.max_batch_images,
        max_batch_pixels=args.max_batch_pixels, cache=_cache_flags(args), tracing=_tracing_flags(args))


def _cache_flags(args: argparse.Namespace) -> CacheFlags | None:
    if not args.cache:
        return None
    for flag, value, low in (("--cache_ttl_seconds", args.cache_ttl_seconds, 1),
                             ("--cache_max_entry_bytes", args.cache_max_entry_bytes, 1),
                             ("--cache_timeout_ms", args.cache_timeout_ms, 1)):
        if value < low:
            raise InvalidFlags(f"{flag} must be at least {low}, got {value}")
    return CacheFlags(ttl_seconds=args.cache_ttl_seconds, max_entry_bytes=args.cache_max_entry_bytes,
                      timeout_ms=args.cache_timeout_ms)


# --- single process: the transformer runs the model itself -------------------------------------------------

IN_PROCESS = "in-process"  # the predictor address of a single-process server: the model runs in it


def single_process(spec: VSSModelSpec) -> bool:
    """Whether a version's pod runs one process (`spec.predictor.processes`), for render and `vss run` alike.
    `auto` is single on the CPU: the model and the pre/post-processing share the same cores anyway, and the hop
    (a detector's raw 1x84x8400 FP32 output is 2.8 MB a request, plus serialisation and wake-ups on both sides)
    is pure overhead there. On a GPU the two containers stay, so the transformer's CPU scales apart from the
    GPU (its requests and limits are its own) and a slow decode never holds the GPU's process."""
    if spec.predictor.processes is Processes.AUTO:
        return spec.predictor.device is Device.CPU
    return spec.predictor.processes is Processes.SINGLE


@dataclass(frozen=True)
class SingleProcessFlags:
    """What a single-process server is told: the transformer's flags without the hop, and the predictor's model
    and batching flags (its name, version, ports, limits and tracing are the transformer's)."""

    transformer: TransformerFlags
    predictor: PredictorFlags

    def args(self) -> list[str]:
        return [*self.transformer.args(hop=False), *self.predictor.model_args()]


def single_process_args(spec: VSSModelSpec, version: ModelVersion, model_path: str, http_port: int,
                        grpc_port: int, *, model_name: str, tracing: TracingFlags | None = None) -> list[str]:
    transformer = transformer_flags_for(spec, model_name, IN_PROCESS, IN_PROCESS, http_port, grpc_port,
                                        version=version.name, tracing=tracing)
    predictor = predictor_flags_for(spec, version, model_path, http_port, grpc_port, model_name=model_name,
                                    tracing=tracing)
    return SingleProcessFlags(transformer, predictor).args()


def single_process_parser(*parents: argparse.ArgumentParser, description: str | None = None
                          ) -> argparse.ArgumentParser:
    parser = transformer_parser(*parents, description=description, hop=False)
    _predictor_model_arguments(parser)
    return parser


def single_process_flags(args: argparse.Namespace) -> SingleProcessFlags:
    transformer = transformer_flags(args, hop=False)
    predictor = PredictorFlags(
        model_name=transformer.model_name, model_version=transformer.model_version,
        model_path=str(args.model_path), model_format=args.model_format, device=args.device,
        normalization=args.normalize, warmup_shape=args.warmup_shape, max_batch_size=args.max_batch_size,
        max_latency_ms=args.max_latency_ms, max_inflight_batches=args.max_inflight_batches,
        max_queue_size=args.max_queue_size, max_concurrency=transformer.max_concurrency, threads=args.threads,
        http_port=transformer.http_port, grpc_port=transformer.grpc_port,
        max_message_bytes=args.grpc_max_receive_message_length, tracing=transformer.tracing,
        allow_cpu_fallback=args.allow_cpu_fallback, runtime=args.runtime, precision=args.precision)
    return SingleProcessFlags(transformer, predictor)


def _kserve_flags(parser: argparse.ArgumentParser, *, transformer: bool) -> None:
    """The KServe-owned flags our command lines write, with KServe's defaults, for reading them back without
    KServe installed; the round-trip test also reads them with KServe's own parser."""
    parser.add_argument("--model_name", default="model")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--grpc_max_receive_message_length", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--grpc_max_send_message_length", type=int, default=8 * 1024 * 1024)
    if transformer:
        parser.add_argument("--predictor_host", default=None)
        parser.add_argument("--predictor_protocol", default="v1")
        parser.add_argument("--enable_predictor_health_check", action="store_true")
        parser.add_argument("--predictor_request_timeout_seconds", type=int, default=600)

