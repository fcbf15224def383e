"""The command lines of the two data-plane processes for a VSSModel version: one mapping from spec to
flags, shared by `vss run` (local processes) and `render` (the containers of an InferenceService)."""

from __future__ import annotations

import json

from vss_operator.spec import ModelVersion, Task, VSSModelSpec

DETECTION_NORMALIZE = "0.0,0.0,0.0:1.0,1.0,1.0"  # YOLO exports take RGB / 255
# Sensor windows go to the model as FP32 readings: no image prelude in front of it.
TIME_SERIES = frozenset({Task.ANOMALY, Task.FORECASTING})


def normalization(spec: VSSModelSpec) -> str:
    if spec.task is Task.CLASSIFICATION:
        p = spec.classification
        return ",".join(repr(v) for v in p.mean) + ":" + ",".join(repr(v) for v in p.std)
    return DETECTION_NORMALIZE


def warmup_shape(spec: VSSModelSpec) -> str:
    if spec.task is Task.ANOMALY:  # steps,features of one window
        return f"{spec.anomaly.window},{len(spec.anomaly.features)}"
    if spec.task is Task.FORECASTING:
        return f"{spec.forecasting.lookback},{len(spec.forecasting.features)}"
    if spec.task is Task.CLASSIFICATION:
        size = spec.classification.input_size
        return f"{size},{size}"
    size = spec.detection.input_size
    # A 16:9 camera frame letterboxed to a stride-multiple rectangle, the common case at run time.
    return f"{(size * 9 // 16 + 31) // 32 * 32},{size}" if spec.detection.rectangular else f"{size},{size}"


def predictor_args(spec: VSSModelSpec, version: ModelVersion, model_path: str, http_port: int,
                   grpc_port: int, *, model_name: str) -> list[str]:
    args = [
        "--model_name", model_name, "--model_version", version.name,
        "--model_path", model_path, "--model_format", version.format.value,
        "--device", spec.predictor.device.value,
        *([] if spec.task in TIME_SERIES else ["--normalize", normalization(spec)]),
        "--warmup_shape", warmup_shape(spec),
        "--max_batch_size", str(spec.predictor.batching.max_batch_size),
        "--max_latency_ms", str(spec.predictor.batching.max_latency_ms),
        "--max_inflight_batches", str(spec.predictor.batching.max_in_flight),
        "--http_port", str(http_port), "--grpc_port", str(grpc_port),
        "--grpc_max_receive_message_length", str(spec.transformer.max_request_bytes * 8),
        "--grpc_max_send_message_length", str(spec.transformer.max_request_bytes * 8),
    ]
    if spec.predictor.threads:
        args += ["--threads", str(spec.predictor.threads)]
    return args


def transformer_args(spec: VSSModelSpec, model_name: str, predictor_grpc: str, predictor_rest: str,
                     http_port: int, grpc_port: int, *, version: str | None = None) -> list[str]:
    block = getattr(spec.transformer, spec.task.value)
    params = block.model_dump(mode="json", by_alias=True, exclude_none=True)
    return [
        "--model_name", model_name, "--model_version", version or spec.version,
        "--task", spec.task.value, "--params", json.dumps(params, separators=(",", ":")),
        "--predictor_host", predictor_grpc, "--predictor_protocol", "grpc-v2",
        "--predictor_rest_host", predictor_rest, "--enable_predictor_health_check",
        "--max_request_bytes", str(spec.transformer.max_request_bytes),
        "--grpc_max_receive_message_length", str(spec.transformer.max_request_bytes),
        "--http_port", str(http_port), "--grpc_port", str(grpc_port),
    ]
