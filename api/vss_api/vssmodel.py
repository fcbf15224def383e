"""The VSSModel resource (`serving.vss.ai/v1alpha1`) as pydantic models: the one schema that the CRD,
the operator, `vss render` and `vss run` all read."""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "serving.vss.ai"
VERSION = "v1alpha1"
KIND: Literal["VSSModel"] = "VSSModel"
PLURAL = "vssmodels"
API_VERSION: Literal["serving.vss.ai/v1alpha1"] = "serving.vss.ai/v1alpha1"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DURATION = r"^([0-9]+(ms|s|m|h))+$"
PROMETHEUS_LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"

# --- the name budget: what KServe makes of a VSSModel's name -------------------------------------------------
# Each version is served by the InferenceService `<metadata.name>-<version>`, for which KServe (v0.20, raw mode)
# writes the Deployment, Service and HPA `<isvc>-predictor` and labels the Deployment's selector and Pods
# `app: isvc.<isvc>-predictor` (constants.GetRawServiceLabel): a label value of at most 63 characters, the
# tightest of KServe's names (a longer one is admitted, but KServe's Deployment is then refused by the apiserver
# and no Pod ever starts: tests/integration/test_kserve_e2e.py). KServe's webhook also refuses an
# InferenceService name that starts with a digit ([a-z]([-a-z0-9]*[a-z0-9])?).
DNS_LABEL_LIMIT = 63
KSERVE_PREDICTOR_SUFFIX = "-predictor"
KSERVE_RAW_LABEL_PREFIX = "isvc."
# len("isvc.") + len(name) + len("-") + len(version) + len("-predictor") <= 63
NAME_AND_VERSION_LIMIT = DNS_LABEL_LIMIT - len(KSERVE_RAW_LABEL_PREFIX) - len(KSERVE_PREDICTOR_SUFFIX) - 1
NAME_BUDGET_MESSAGE = (
    f"metadata.name and each version name may have at most {NAME_AND_VERSION_LIMIT} characters together: "
    f"KServe labels the Pods app={KSERVE_RAW_LABEL_PREFIX}<name>-<version>{KSERVE_PREDICTOR_SUFFIX}, "
    f"a label value of at most {DNS_LABEL_LIMIT}")
LEADING_LETTER_MESSAGE = ("metadata.name must start with a lowercase letter: KServe refuses an InferenceService "
                          "name (<name>-<version>) that starts with a digit")

# --- the status vocabulary: what `status` of a VSSModel says (kstatus conditions, phase) ------------------
# Condition types: kstatus' Ready/Reconciling/Stalled (`kubectl wait`, Argo CD and Flux read them) and ours.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
ROLLOUT_SUCCEEDED = "RolloutSucceeded"
ConditionStatus = Literal["True", "False", "Unknown"]
# The phases a rollout passes through, and `status.phase`: those, or Failed when the version that should
# serve will not start without a change from a person.
RolloutPhase = Literal["Stable", "Progressing", "Promoted", "RolledBack"]
Phase = Literal["Stable", "Progressing", "Promoted", "RolledBack", "Failed"]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """A CRD `x-kubernetes-validations` entry: the apiserver's twin of a validator below, so that
    `kubectl apply` refuses what pydantic would refuse, with the same words."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def _validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class SpecModel(BaseModel):
    """Base of every spec block: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


class Task(StrEnum):
    """What the model does; it picks the transformer block, the v2 inputs and outputs and the result shapes."""

    DETECTION = "detection"
    CLASSIFICATION = "classification"
    ANOMALY = "anomaly"
    FORECASTING = "forecasting"


class ModelFormat(StrEnum):
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"


class Device(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class RuntimeKind(StrEnum):
    """What runs an ONNX model: ONNX Runtime (TensorRT, CUDA or CPU providers), or OpenVINO on the CPU; `auto`,
    OpenVINO for an image model on the CPU (where it measured faster, with the same outputs) and ONNX Runtime
    for the rest (`vss_predictors.model.open_runtime`)."""

    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class Precision(StrEnum):
    """The arithmetic a model runs in: fp32 as exported, or bf16 (OpenVINO on CPUs with AMX or AVX512-BF16)."""

    FP32 = "fp32"
    BF16 = "bf16"


class Processes(StrEnum):
    """How a version's pod runs its model: `single`, the transformer runs it in its own process (one container,
    no hop); `two`, a predictor container beside the transformer, one gRPC hop away; `auto`, single on the CPU
    and two on a GPU (`vss_api.serving_flags.single_process`)."""

    AUTO = "auto"
    SINGLE = "single"
    TWO = "two"


class YoloLayout(StrEnum):
    """How a detector's raw output is laid out; `auto` reads it from the model's outputs and metadata."""

    AUTO = "auto"
    YOLOV5 = "yolov5"  # [B, N, 5+nc]: cx, cy, w, h, objectness, class scores
    YOLOV8 = "yolov8"  # [B, 4+nc, N]: cx, cy, w, h, class scores (v8 and v11 alike)
    END2END = "end2end"  # [B, K, 6]: x1, y1, x2, y2, score, class id (NMS inside the graph)


class ModelVersion(SpecModel):
    name: Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=20,
                               description="Version name, a DNS label (it becomes part of child names).")]
    storage_uri: Annotated[str, Field(min_length=1, description=(
        "Where the weights are: any KServe storage URI (s3://, gs://, pvc://, https://), "
        "or a local path / file:// URI for `vss run`."))]
    format: ModelFormat = Field(default=ModelFormat.ONNX, description=(
        "How the weights are stored: onnx (ONNX Runtime) or torchscript (PyTorch's TorchScript)."))


class Batching(SpecModel):
    """How the predictor merges concurrent requests into one batch (a lone request never waits)."""

    max_batch_size: Annotated[int, Field(ge=1, le=256, description="Largest merged batch.")] = 8
    max_latency_ms: Annotated[float, Field(ge=0, le=1000, description=(
        "Longest a request waits for others to join its batch."))] = 5.0
    max_in_flight: Annotated[int, Field(ge=1, le=8, description=(
        "Batches the predictor runs at once: 2 overlaps gathering and copying one batch with computing "
        "the other; 1 runs strictly one after another."))] = 2
    max_queue_size: Annotated[int, Field(ge=1, le=65536, description=(
        "Requests that may wait for a batch; one more is refused at once with 503 and Retry-After (gRPC "
        "UNAVAILABLE) instead of waiting behind a queue it cannot get through in time. Nothing queued is "
        "dropped for it."))] = 256


class Resources(SpecModel):
    """Kubernetes resource requests and limits of the container (cpu, memory, nvidia.com/gpu, ...)."""

    requests: dict[str, str] = Field(default_factory=dict, description=(
        "Resources the scheduler reserves, as Kubernetes quantities, e.g. {cpu: \"2\", memory: 4Gi}."))
    limits: dict[str, str] = Field(default_factory=dict, description=(
        "Most the container may use, as Kubernetes quantities; a GPU is asked for here (nvidia.com/gpu: 1)."))


OPENVINO_ON_CPU = "predictor.runtime openvino runs on the CPU only: use device cpu, or runtime onnxruntime"
BF16_NEEDS_OPENVINO = "predictor.precision bf16 needs predictor.runtime openvino"


class PredictorSpec(SpecModel):
    """The predictor container: where the model runs, its replicas, threads and batching."""

    model_config = ConfigDict(json_schema_extra=_validations(
        cel("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
            "predictor.maxReplicas must be >= predictor.minReplicas", ".maxReplicas"),
        cel("!has(self.runtime) || self.runtime != 'openvino' || !has(self.device) || self.device == 'cpu'",
            OPENVINO_ON_CPU, ".runtime"),
        cel("!has(self.precision) || self.precision == 'fp32' || (has(self.runtime) && self.runtime == 'openvino')",
            BF16_NEEDS_OPENVINO, ".precision")))

    device: Device = Field(default=Device.CPU, description=(
        "cpu, or gpu: ONNX Runtime's TensorRT and CUDA providers, TorchScript on CUDA. A gpu predictor that "
        "finds no usable GPU stays not ready and says why, unless allowCpuFallback is true."))
    allow_cpu_fallback: bool = Field(default=False, description=(
        "With device gpu: serve on the CPU when no GPU provider starts (ready, with a warning in the log) "
        "instead of staying not ready with reason GpuUnavailable."))
    resources: Resources = Field(default_factory=Resources)
    min_replicas: Annotated[int, Field(ge=0, le=100, description=(
        "Fewest pods of each version; 0 lets an idle version scale to zero (Serverless mode only)."))] = 1
    max_replicas: Annotated[int, Field(ge=1, le=100, description=(
        "Most pods of each version the autoscaler may run."))] = 1
    threads: Annotated[int | None, Field(ge=1, le=256, description=(
        "Intra-op threads of the runtime; unset means one per available core."))] = None
    runtime: RuntimeKind = Field(default=RuntimeKind.AUTO, description=(
        "What runs an ONNX model: onnxruntime (TensorRT, CUDA or CPU), openvino (CPU only; YOLOv8n 41 ms "
        "against 50-54 ms on a 2-core Sapphire Rapids, same outputs), or auto: openvino for an image model "
        "(detection, classification) on the CPU, onnxruntime otherwise, and onnxruntime wherever OpenVINO "
        "cannot run the model. TorchScript models ignore it."))
    precision: Precision = Field(default=Precision.FP32, description=(
        "fp32, or bf16 with runtime openvino: bfloat16 on CPUs with AMX or AVX512-BF16 (2-3x faster there), "
        "scores drift by a measured amount (docs/runtimes.md)."))
    batching: Batching = Field(default_factory=Batching)
    processes: Processes = Field(default=Processes.AUTO, description=(
        "single: the transformer runs the model in its own process, one container and no hop between them "
        "(the fastest on CPUs, where the hop costs more than it saves); two: the predictor in a container of "
        "its own beside the transformer, so the transformer's CPU and the GPU scale apart; auto: single for "
        "device cpu, two for gpu. The API, limits and metrics are the same either way."))

    @model_validator(mode="after")
    def _replicas_ordered(self) -> Self:
        if self.max_replicas < self.min_replicas:
            raise ValueError("predictor.maxReplicas must be >= predictor.minReplicas")
        if self.runtime is RuntimeKind.OPENVINO and self.device is not Device.CPU:
            raise ValueError(OPENVINO_ON_CPU)
        if self.precision is Precision.BF16 and self.runtime is not RuntimeKind.OPENVINO:
            raise ValueError(BF16_NEEDS_OPENVINO)
        return self


class DetectionParams(SpecModel):
    """Object detection (Ultralytics YOLO exports): letterbox, decode, NMS."""

    input_size: Annotated[int, Field(ge=32, le=4096, multiple_of=32, description=(
        "Side in pixels the frame is letterboxed to (the model's imgsz), a multiple of 32."))] = 640
    confidence_threshold: Annotated[float, Field(ge=0.0, le=1.0, description=(
        "Lowest score a detection may have to be returned."))] = 0.5
    iou_threshold: Annotated[float, Field(ge=0.0, le=1.0, description=(
        "Non-maximum suppression: a box overlapping a better one of its class by more than this "
        "intersection over union is dropped."))] = 0.4
    max_detections: Annotated[int, Field(ge=1, le=10000, description=(
        "Most detections returned per image, best first."))] = 300
    classes: list[str] | None = Field(default=None, description=(
        "Class names by id; unset means the names stored in the model's metadata."))
    layout: YoloLayout = YoloLayout.AUTO
    rectangular: bool = Field(default=True, description=(
        "Letterbox to the smallest stride-multiple rectangle holding the frame when the model "
        "accepts dynamic height/width (as Ultralytics does); a square otherwise."))
    fast_decode: bool = Field(default=False, description=(
        "Decode a JPEG at the smallest reduced DCT scale (1/2, 1/4, 1/8) that still covers inputSize, then "
        "letterbox: a 1280x720 frame for 640 decodes straight to 640x360 (decode + letterbox 4.4 -> 3.0 ms on "
        "a quiet core), but its pixels are not those of a full decode resized bilinearly, so answers drift "
        "from Ultralytics' `predict`: 0.020 in score and 1.4 px measured with the shipped detector (0.08 was "
        "seen on a YOLOv8n export), enough to move a detection across a threshold. Off (the default): every "
        "frame is decoded in full and letterboxed exactly as Ultralytics does (cv2 INTER_LINEAR, grey 114 "
        "padding), and answers equal predict's within 0.01 in score and 0.5 px."))


class ClassificationParams(SpecModel):
    """Image classification: resize, center crop, normalise, top-k."""

    input_size: Annotated[int, Field(ge=16, le=1024, description=(
        "Side in pixels of the square center crop the model reads."))] = 224
    resize_size: Annotated[int | None, Field(ge=16, le=2048, description=(
        "Shorter side before the center crop; unset means inputSize * 256 / 224."))] = None
    top_k: Annotated[int, Field(ge=1, le=1000, description="Labels returned per image, best first.")] = 5
    mean: Annotated[list[float], Field(min_length=3, max_length=3, description=(
        "Per-channel (R, G, B) mean subtracted from pixels scaled to 0..1 (ImageNet's by default)."))] = [
        0.485, 0.456, 0.406]
    std: Annotated[list[float], Field(
        min_length=3, max_length=3,
        description="Per-channel (R, G, B) standard deviation pixels are divided by after the mean.",
        json_schema_extra=_validations(cel("self.all(s, s > 0.0)", "classification.std values must be > 0")),
    )] = [0.229, 0.224, 0.225]
    softmax: Literal["auto", "always", "never"] = Field(default="auto", description=(
        "Apply softmax to the model output: auto applies it unless rows already sum to 1."))
    classes: list[str] | None = Field(default=None, description=(
        "Class names by index; unset means the names stored in the model's metadata."))

    @model_validator(mode="after")
    def _std_positive(self) -> Self:
        if any(s <= 0 for s in self.std):
            raise ValueError("classification.std values must be > 0")
        return self


SENSOR_FEATURES = ("temperature", "humidity", "pressure", "vibration", "power")  # the shipped models'
FEATURE_NAME = r"^[A-Za-z0-9_.:-]+$"


def _sensor_features() -> Any:
    return Field(
        default_factory=lambda: list(SENSOR_FEATURES), min_length=1, max_length=256,
        description=("Sensor names, in the order of the last axis of the v2 `series` tensor; the same set "
                     "the model was trained on (its metadata), in any order."),
        # A set: the apiserver itself refuses a name given twice, as the validator below does.
        json_schema_extra={"x-kubernetes-list-type": "set"})


def _unique_features(task: str, features: list[str]) -> None:
    if len(set(features)) != len(features):
        raise ValueError(f"{task}.features must be unique")


class AnomalyParams(SpecModel):
    """Anomaly detection on windows of sensor readings."""

    features: list[Annotated[str, Field(pattern=FEATURE_NAME, max_length=64)]] = _sensor_features()
    window: Annotated[int, Field(ge=2, le=100000, description=(
        "Readings per window, as the model reads them."))] = 100
    threshold: Annotated[float | None, Field(ge=0.0, le=1.0, description=(
        "anomaly_score from which a window is an anomaly; unset means the threshold calibrated into the "
        "model."))] = None
    max_batch: Annotated[int, Field(ge=1, le=4096, description="Most windows in one request.")] = 256

    @model_validator(mode="after")
    def _features_unique(self) -> Self:
        _unique_features("anomaly", self.features)
        return self


class ForecastingParams(SpecModel):
    """Forecasting sensor readings with prediction intervals."""

    features: list[Annotated[str, Field(pattern=FEATURE_NAME, max_length=64)]] = _sensor_features()
    lookback: Annotated[int, Field(ge=2, le=100000, description="Readings the model reads.")] = 24
    horizon: Annotated[int, Field(ge=1, le=10000, description=(
        "Steps forecast; at most what the model forecasts."))] = 6
    interval_level: Annotated[float, Field(ge=0.5, le=0.99, description=(
        "Coverage of the prediction interval, from the model's conformal calibration."))] = 0.9
    max_batch: Annotated[int, Field(ge=1, le=4096, description="Most windows in one request.")] = 256

    @model_validator(mode="after")
    def _features_unique(self) -> Self:
        _unique_features("forecasting", self.features)
        return self


SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - the pattern of a Secret's data keys, as Kubernetes allows them


class SecretKeySelector(SpecModel):
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=253, description=(
        "A Secret in the VSSModel's namespace. The kubelet reads it into the transformer's environment; the "
        "VSSModel, the rendered InferenceService and the logs never hold its value."))]
    key: Annotated[str, Field(pattern=SECRET_KEY, max_length=253, description=(
        "The key of that Secret whose value is the Redis URL, e.g. redis://:PASSWORD@redis.cache:6379/0 "
        "(rediss:// for TLS)."))] = "url"


class ResultCache(SpecModel):
    """The transformer's result cache on Redis, off unless this block is present. A request whose input bytes,
    served model version and settings were answered before (within `ttlSeconds`) gets that answer again without
    the predictor; a Redis that is down or slow never fails or holds up a request: it is counted
    (`result_cache_errors_total`) and left alone for a while."""

    secret_ref: Annotated[SecretKeySelector, Field(description=(
        "Where the Redis URL is: a key of a Secret, so no password is written in the VSSModel."))]
    ttl_seconds: Annotated[int, Field(ge=1, le=7 * 86400, description=(
        "How long an answer is kept, in seconds (Redis expires it); at most a week."))] = 3600
    max_entry_bytes: Annotated[int, Field(ge=256, le=64 * 1024 * 1024, description=(
        "Largest answer stored, serialized (JSON); a larger one is served and not stored "
        "(`result_cache_too_large_total`)."))] = 1024 * 1024
    timeout_ms: Annotated[int, Field(ge=1, le=5000, description=(
        "Longest one Redis call may take before it is counted as an error and the request goes on without "
        "the cache."))] = 50


class TransformerSpec(SpecModel):
    """The transformer container: the task's pre- and post-processing and the limits on what a request may send."""

    detection: DetectionParams | None = Field(default=None, description=(
        "Detection parameters (spec.task detection only); unset means their defaults."))
    classification: ClassificationParams | None = Field(default=None, description=(
        "Classification parameters (spec.task classification only); unset means their defaults."))
    anomaly: AnomalyParams | None = Field(default=None, description=(
        "Anomaly detection parameters (spec.task anomaly only); unset means their defaults."))
    forecasting: ForecastingParams | None = Field(default=None, description=(
        "Forecasting parameters (spec.task forecasting only); unset means their defaults."))
    max_request_bytes: Annotated[int, Field(ge=1024, le=1 << 30, description=(
        "Largest request body accepted; larger ones get 413."))] = 32 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(ge=1, le=16384 * 16384, description=(
        "Largest image (width x height) a vision request may send, read from the image's header before "
        "any of it is decoded (JPEG, PNG, BMP) or from a `pixels` tensor's shape; a larger one gets 413. "
        "The default fits an 8K UHD frame (7680x4320)."))] = 7680 * 4320
    max_batch_images: Annotated[int, Field(ge=1, le=1024, description=(
        "Most images in one vision request; more get 400."))] = 64
    max_batch_pixels: Annotated[int, Field(ge=1, le=1 << 32, description=(
        "Most pixels all the images of one vision request may hold together, checked from their headers "
        "before any is decoded; more get 413. It bounds what one request decodes (3 bytes a pixel): the "
        "default, 32 full-HD frames or two 8K UHD ones, about 200 MB. A pod's worst case is "
        "maxConcurrency requests of this size."))] = 2 * 7680 * 4320
    max_concurrency: Annotated[int, Field(ge=1, le=100000, description=(
        "Requests the transformer serves at once, REST and gRPC together; one more is refused at once with "
        "503 and Retry-After (gRPC UNAVAILABLE). Health probes are never counted."))] = 64
    request_timeout_ms: Annotated[int, Field(ge=1, le=3_600_000, description=(
        "Deadline of a request that brings none shorter (a gRPC deadline, or the v2 `timeout` parameter in "
        "microseconds): past it the request gets 504 (gRPC DEADLINE_EXCEEDED), and the predictor drops it "
        "if it has not started it."))] = 30_000
    predictor_timeout_seconds: Annotated[int, Field(ge=1, le=600, description=(
        "Longest the transformer waits for the predictor on one call (sooner if the request's deadline is "
        "sooner); past it the request gets 504."))] = 10
    cache: Annotated[ResultCache | None, Field(description=(
        "Opt-in result cache on Redis: repeated inputs (the same frame sent again) are answered from it. Off "
        "when absent."))] = None


class RolloutStep(SpecModel):
    """One canary step: a share of the traffic, held while the analysis judges it."""

    weight: Annotated[int, Field(ge=1, le=99, description=(
        "Percent of traffic sent to the new version during this step; weights rise from step to step."))]
    pause: Annotated[str, Field(pattern=DURATION, description=(
        "Least time the step lasts (a duration: 30s, 2m, 1h); it ends after that once a check passes."))] = "1m"


class PrometheusSource(SpecModel):
    """The Prometheus the analysis queries for the canary's metrics."""

    endpoint: Annotated[str, Field(pattern=DNS_LABEL, max_length=63, description=(
        "Name of a Prometheus the operator is configured with (`vss operator --prometheus NAME=URL`, the "
        "chart's `prometheus.endpoints`). A VSSModel picks among those and names no URL, so whoever may "
        "create a VSSModel cannot make the cluster-wide operator fetch an address of their choosing."))] = "default"
    timeout: Annotated[str, Field(pattern=DURATION, description=(
        "How long one query may take; a query that takes longer is an analysis error, which pauses the "
        "rollout (never a rollback)."))] = "5s"
    labels: dict[str, str] = Field(
        default_factory=dict, description=(
            "Extra exact label matchers for every query, e.g. {namespace: vision} when the scrape "
            "configuration attaches a namespace label (model names are unique per namespace only)."),
        json_schema_extra=_validations(cel(
            f"size(self) <= 8 && self.all(k, k.matches('{PROMETHEUS_LABEL}'))",
            "rollout.analysis.prometheus.labels takes at most 8 Prometheus label names")))

    @model_validator(mode="after")
    def _label_names(self) -> Self:
        if len(self.labels) > 8 or not all(re.match(PROMETHEUS_LABEL, k) for k in self.labels):
            raise ValueError("rollout.analysis.prometheus.labels takes at most 8 Prometheus label names")
        return self


class Analysis(SpecModel):
    """How the canary is judged: every interval its error rate and p95 latency against these thresholds."""

    interval: Annotated[str, Field(pattern=DURATION, description=(
        "How often the canary is judged; also the window of every query, so keep it at least twice "
        "Prometheus' scrape interval."))] = "1m"
    failure_limit: Annotated[int, Field(ge=1, le=100, description=(
        "Failed checks in one rollout that roll it back."))] = 2
    no_data_limit: Annotated[int, Field(ge=1, le=100, description=(
        "Checks in a row with too little canary traffic to judge that roll the rollout back. A check "
        "without data neither passes nor fails; Prometheus being unreachable or erroring is an analysis "
        "error instead, which pauses the rollout and never counts here."))] = 5
    min_requests: Annotated[int, Field(ge=1, le=1_000_000, description=(
        "Fewest canary requests in an interval for a check to count; fewer is no data."))] = 10
    max_error_rate: Annotated[float, Field(ge=0.0, le=1.0, description=(
        "Highest share of the canary's requests that may end in a server error."))] = 0.01
    max_p95_latency_ms: Annotated[float, Field(gt=0, description=(
        "Highest 95th percentile of the canary's request duration."))] = 80.0
    component: Literal["predictor", "transformer"] = Field(default="predictor", description=(
        "Whose metrics judge the canary: the predictor's (the model) or the transformer's (what "
        "clients see, pre/post-processing included)."))
    prometheus: PrometheusSource = Field(default_factory=PrometheusSource)


class Shadow(SpecModel):
    """Mirror live requests to the new version (answers discarded) before it takes any traffic."""

    percent: Annotated[int, Field(ge=1, le=100, description="Share of requests mirrored.")] = 100
    duration: Annotated[str, Field(pattern=DURATION, description=(
        "How long the shadow phase lasts at least; it ends after that once a check passes."))] = "5m"


class RolloutSpec(SpecModel):
    """How a new spec.version replaces the serving one: canary steps, analysis, promotion."""

    model_config = ConfigDict(json_schema_extra=_validations(
        cel("self.strategy != 'Canary' || size(self.steps) > 0",
            "rollout.steps must hold at least one step when rollout.strategy is Canary", ".steps"),
        cel("self.trafficRouter == 'gatewayapi' || (!has(self.shadow) && !has(self.stickyHeader))",
            "rollout.shadow and rollout.stickyHeader need rollout.trafficRouter gatewayapi")))

    strategy: Literal["Canary", "Immediate"] = Field(default="Canary", description=(
        "Canary: move traffic step by step while the analysis passes; Immediate: all traffic to the new "
        "version as soon as it is ready."))
    traffic_router: Literal["gatewayapi", "knative"] = Field(default="gatewayapi", description=(
        "Who splits traffic: gatewayapi (an HTTPRoute with weighted backends, one InferenceService per "
        "version) or knative (KServe's canaryTrafficPercent on one InferenceService, Serverless mode only)."))
    steps: list[RolloutStep] = Field(
        default_factory=lambda: [RolloutStep(weight=10, pause="2m"), RolloutStep(weight=50, pause="5m")],
        max_length=20, description="The canary steps, in order; after the last one passes the new version is promoted.",
        json_schema_extra=_validations(cel(
            "self.map(s, s.weight).isSorted() && self.all(a, self.exists_one(b, b.weight == a.weight))",
            "rollout.steps weights must rise strictly from step to step")))
    analysis: Analysis = Field(default_factory=Analysis)
    promotion: Literal["Automatic", "Manual"] = Field(default="Automatic", description=(
        "Manual: after the last step passes, wait for the annotation serving.vss.ai/promote "
        "naming the canary version."))
    progress_deadline: Annotated[str, Field(pattern=DURATION, description=(
        "Longest wait for the new version's InferenceService to become ready; then it rolls back."))] = "10m"
    scale_down_delay: Annotated[str, Field(pattern=DURATION, description=(
        "How long a version the route no longer sends to (the old one after a promotion, an aborted canary) "
        "keeps running before its InferenceService is deleted, so a gateway still applying the new weights "
        "and the requests in flight reach a live backend. 0s deletes it at once."))] = "30s"
    shadow: Shadow | None = Field(default=None, description=(
        "Optional shadow phase before the first step (Gateway API RequestMirror)."))
    sticky_header: Annotated[str | None, Field(
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$", max_length=128, description=(
            "Keep a client on one version during a rollout: the gateway's session persistence by "
            "this request header (Gateway API sessionPersistence, type Header)."))] = None

    @model_validator(mode="after")
    def _weights_rise(self) -> Self:
        weights = [s.weight for s in self.steps]
        if any(b <= a for a, b in itertools.pairwise(weights)):
            raise ValueError("rollout.steps weights must rise strictly from step to step")
        if self.strategy == "Canary" and not self.steps:
            raise ValueError("rollout.steps must hold at least one step when rollout.strategy is Canary")
        if self.traffic_router != "gatewayapi" and (self.shadow is not None or self.sticky_header):
            raise ValueError("rollout.shadow and rollout.stickyHeader need rollout.trafficRouter gatewayapi")
        return self


OTLP_HTTP_URL = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"


class TracingSpec(SpecModel):
    """OpenTelemetry traces of each request through the transformer and the predictor, over OTLP/HTTP."""

    endpoint: Annotated[str | None, Field(pattern=OTLP_HTTP_URL, max_length=2048, description=(
        "OTLP/HTTP base URL of a collector (OpenTelemetry Collector, Jaeger, Tempo), e.g. "
        "http://otel-collector.observability:4318: spans go to its /v1/traces. Unset: the operator's default "
        "(vss operator --tracing-endpoint, $VSS_TRACING_ENDPOINT); with neither, nothing is traced and tracing "
        "costs nothing."))] = None
    sampling_ratio: Annotated[float, Field(ge=0.0, le=1.0, description=(
        "Share of the traces starting at the transformer that are kept. A request whose caller sent a "
        "traceparent follows the caller's sampled flag instead."))] = 1.0


# A label key: an optional DNS-subdomain prefix and `/`, then a name (Kubernetes' qualified name).
LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
SELECTOR_VALUES_MESSAGE = "operator In and NotIn need values; Exists and DoesNotExist take none"
PEER_MESSAGE = "a peer needs a namespaceSelector, a podSelector or both"


class LabelSelectorRequirement(SpecModel):
    """One expression of a label selector, as in Kubernetes' own LabelSelectorRequirement."""

    model_config = ConfigDict(json_schema_extra=_validations(cel(
        "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
        SELECTOR_VALUES_MESSAGE)))

    key: Annotated[str, Field(pattern=LABEL_KEY, max_length=317, description="The label key it applies to.")]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description=(
        "How the label's value is compared with `values`: In, NotIn, Exists or DoesNotExist."))
    values: list[Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]] = Field(
        default_factory=list, max_length=64, description=(
            "The values for In and NotIn (at least one); empty for Exists and DoesNotExist."))

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> Self:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ValueError(SELECTOR_VALUES_MESSAGE)
        return self


class LabelSelector(SpecModel):
    """A Kubernetes label selector: every `matchLabels` entry and every `matchExpressions` expression must
    hold. An empty selector ({}) selects everything."""

    match_labels: dict[str, Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]] = Field(
        default_factory=dict, description="Labels that must all be present with these values.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Expressions that must all hold.")


class NetworkPolicyPeer(SpecModel):
    """Who may connect, as a NetworkPolicyPeer: pods chosen by `podSelector` in the namespaces chosen by
    `namespaceSelector`. Only `namespaceSelector`: every pod of those namespaces; only `podSelector`: those pods
    of the VSSModel's own namespace."""

    model_config = ConfigDict(json_schema_extra=_validations(cel(
        "has(self.namespaceSelector) || has(self.podSelector)", PEER_MESSAGE)))

    namespace_selector: LabelSelector | None = Field(default=None, description=(
        "The namespaces, by their labels (every namespace carries kubernetes.io/metadata.name: <its name>); "
        "{} is every namespace."))
    pod_selector: LabelSelector | None = Field(default=None, description=(
        "The pods, by their labels; {} is every pod of the selected namespaces."))

    @model_validator(mode="after")
    def _names_someone(self) -> Self:
        if self.namespace_selector is None and self.pod_selector is None:
            raise ValueError(PEER_MESSAGE)
        return self


class NetworkPolicySettings(SpecModel):
    """The NetworkPolicy the operator renders for the serving pods of every version of this VSSModel: callers
    reach only the transformer's ports (8080 REST, 8081 gRPC), the scrape reaches the metrics ports (8085, the
    predictor's /metrics, and 8080), and nothing else from outside the pod reaches the predictor (8085, 8086),
    which the transformer calls on localhost. Only a CNI that enforces NetworkPolicy (Calico, Cilium, ...)
    applies it. Not rendered with rollout.trafficRouter knative, whose activator, queue-proxy and autoscaler
    need ports of their own."""

    enabled: bool = Field(default=True, description=(
        "Render the NetworkPolicy; false deletes it, leaving the pods open to every pod of the cluster."))
    ingress_from: list[NetworkPolicyPeer] | None = Field(default=None, min_length=1, max_length=32, description=(
        "Who may call the transformer (8080, 8081): the Gateway's pods, the stream workers, your clients. "
        "Unset: every pod and address."))
    metrics_from: list[NetworkPolicyPeer] | None = Field(default=None, min_length=1, max_length=32, description=(
        "Who may scrape the metrics ports (8085, 8080): your Prometheus. Unset: every pod of the operator's "
        "metrics namespaces (vss operator --metrics-namespace, the chart's serving.metricsNamespaces; "
        "monitoring by default). Whoever may scrape 8085 may also call the predictor there."))


class VSSModelSpec(SpecModel):
    """What to serve and how to roll it out."""

    model_config = ConfigDict(json_schema_extra=_validations(
        cel("self.versions.exists(v, v.name == self.version)",
            "spec.version must name an entry of spec.versions", ".version"),
        *(cel(f"self.task == '{task.value}' || !has(self.transformer) || !has(self.transformer.{task.value})",
              f"spec.transformer.{task.value} is set but spec.task is not {task.value}: "
              "set only the transformer block of the chosen task", f".transformer.{task.value}")
          for task in Task)))

    task: Task
    version: Annotated[str, Field(pattern=DNS_LABEL, max_length=20, description=(
        "The version that should serve; changing it starts a rollout."))]
    versions: Annotated[list[ModelVersion], Field(
        min_length=1, max_length=32,
        description="Every known version; GitOps adds one and flips `version`.",
        json_schema_extra={
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            **_validations(cel("self.all(a, self.exists_one(b, b.name == a.name))",
                               "spec.versions names must be unique")),
        })]
    predictor: PredictorSpec = Field(default_factory=PredictorSpec)
    transformer: TransformerSpec = Field(default_factory=TransformerSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    tracing: TracingSpec = Field(default_factory=TracingSpec)
    network_policy: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [v.name for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError("spec.versions names must be unique")
        if self.version not in names:
            raise ValueError(f"spec.version {self.version!r} must name an entry of spec.versions {names}")
        for task in Task:
            block = getattr(self.transformer, task.value)
            if task is not self.task and block is not None:
                raise ValueError(f"spec.transformer.{task.value} is set but spec.task is {self.task.value}")
        if getattr(self.transformer, self.task.value) is None:
            # Fill the chosen task's block with its defaults, so consumers never see None for it.
            defaults: dict[Task, SpecModel] = {
                Task.DETECTION: DetectionParams(), Task.CLASSIFICATION: ClassificationParams(),
                Task.ANOMALY: AnomalyParams(), Task.FORECASTING: ForecastingParams()}
            setattr(self.transformer, self.task.value, defaults[self.task])
        return self

    def served_version(self) -> ModelVersion:
        return next(v for v in self.versions if v.name == self.version)

    @property
    def detection(self) -> DetectionParams:
        assert self.transformer.detection is not None, "task is not detection"
        return self.transformer.detection

    @property
    def classification(self) -> ClassificationParams:
        assert self.transformer.classification is not None, "task is not classification"
        return self.transformer.classification

    @property
    def anomaly(self) -> AnomalyParams:
        assert self.transformer.anomaly is not None, "task is not anomaly"
        return self.transformer.anomaly

    @property
    def forecasting(self) -> ForecastingParams:
        assert self.transformer.forecasting is not None, "task is not forecasting"
        return self.transformer.forecasting


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=40)]
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class VSSModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api_version: Annotated[Literal["serving.vss.ai/v1alpha1"], Field(alias="apiVersion")] = API_VERSION
    kind: Literal["VSSModel"] = KIND
    metadata: ObjectMeta
    spec: VSSModelSpec
    status: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fits_kserve_names(self) -> VSSModel:
        name = self.metadata.name
        if not name[:1].isalpha():
            raise ValueError(LEADING_LETTER_MESSAGE)
        if any(len(name) + len(v.name) > NAME_AND_VERSION_LIMIT for v in self.spec.versions):
            raise ValueError(NAME_BUDGET_MESSAGE)
        return self

    @classmethod
    def from_body(cls, body: Any) -> VSSModel:
        return cls.model_validate(dict(body))

    @classmethod
    def from_yaml_file(cls, path: Path) -> VSSModel:
        """Read one VSSModel from a YAML file, with an error that names the file and the field."""
        return load_one(cls, KIND, path)


def load_one(model: type[_M], kind: str, path: Path) -> _M:
    """The one document of `kind` in the YAML file `path`, validated as `model`; InvalidSpec names the file
    and the field."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path}: not valid YAML: {exc}") from exc
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]
    if len(found) != 1:
        raise InvalidSpec(f"{path}: expected exactly one {kind} document, found {len(found)}")
    try:
        return model.model_validate(found[0])
    except ValidationError as exc:
        raise InvalidSpec(f"{path}: {describe_validation_error(exc)}") from exc


_M = TypeVar("_M", bound=BaseModel)


class InvalidSpec(ValueError):
    """A VSSModel that cannot be served as written."""


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as `90s`, `2m`, `1h30m`, `250ms`."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"([0-9]+)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def kserve_name_rules() -> list[dict[str, str]]:
    """The CRD's twins of VSSModel._fits_kserve_names (on the root: only there can CEL read metadata.name)."""
    return [
        cel("self.metadata.name.matches('^[a-z]')", LEADING_LETTER_MESSAGE),
        cel(f"self.spec.versions.all(v, size(self.metadata.name) + size(v.name) <= {NAME_AND_VERSION_LIMIT})",
            NAME_BUDGET_MESSAGE),
    ]
