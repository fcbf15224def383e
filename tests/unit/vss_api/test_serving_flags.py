"""The serving flags round trip: what the operator renders into a container's args, read back by that
container's own parser (KServe's `model_server.parser` as a parent, as in the pod), gives back every setting
of the spec. A renamed, dropped or re-typed flag on either side fails here instead of in a pod."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vss_api.serving_flags import (
    GRPC_MAX_MESSAGE_BYTES,
    IN_PROCESS,
    Normalization,
    PredictorFlags,
    TransformerFlags,
    grpc_message_bytes,
    predictor_flags,
    predictor_flags_for,
    predictor_parser,
    single_process_flags,
    single_process_parser,
    transformer_flags,
    transformer_flags_for,
    transformer_parser,
)
from vss_api.vssmodel import Device, ModelFormat, Processes, Task, VSSModel
from vss_cli import single_process as single_process_main
from vss_operator.render import (
    PREDICTOR_CONTAINER,
    PREDICTOR_GRPC_PORT,
    PREDICTOR_HTTP_PORT,
    TRANSFORMER_CONTAINER,
    TRANSFORMER_GRPC_PORT,
    TRANSFORMER_HTTP_PORT,
    model_path,
    render,
)
from vss_predictors import __main__ as predictor_main
from vss_transformers import __main__ as transformer_main
from vss_transformers.anomaly import AnomalyTask
from vss_transformers.forecasting import ForecastingTask
from vss_transformers.tasks import ClassificationTask, DetectionTask

# The VSSModel examples (examples/ holds VSSStreams too).
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[3] / "examples").glob("*.yaml")
                  if "kind: VSSModel" in p.read_text())
TASK_CLASSES = {Task.DETECTION: DetectionTask, Task.CLASSIFICATION: ClassificationTask,
                Task.ANOMALY: AnomalyTask, Task.FORECASTING: ForecastingTask}


def _variants(model: VSSModel) -> Iterator[tuple[str, VSSModel]]:
    """The example as written, and with every predictor setting that has a flag moved off its default."""
    yield "as written", model
    body = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["predictor"].update({
        "device": "gpu", "allowCpuFallback": True, "threads": 3,
        "batching": {"maxBatchSize": 17, "maxLatencyMs": 2.5, "maxInFlight": 3, "maxQueueSize": 19}})
    body["spec"]["transformer"].update({"maxRequestBytes": 2 * 1024 * 1024 + 1, "maxConcurrency": 23,
                                        "requestTimeoutMs": 2500, "predictorTimeoutSeconds": 7,
                                        "maxImagePixels": 1_000_003, "maxBatchImages": 5,
                                        "maxBatchPixels": 2_000_011,
                                        "cache": {"secretRef": {"name": "redis", "key": "url"}, "ttlSeconds": 61,
                                                  "maxEntryBytes": 4097, "timeoutMs": 7}})
    yield "every flag set", VSSModel.model_validate(body)
    body = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["predictor"].update({"device": "cpu", "runtime": "openvino", "precision": "bf16"})
    yield "openvino bf16", VSSModel.model_validate(body)


def cases() -> list[Any]:
    assert EXAMPLES, "no examples found"
    return [pytest.param(model, id=f"{path.stem}-{label.replace(' ', '-')}")
            for path in EXAMPLES for label, model in _variants(VSSModel.from_yaml_file(path))]


def _containers(model: VSSModel, processes: Processes = Processes.TWO) -> dict[str, dict[str, Any]]:
    """The containers of the model's InferenceService, rendered with `processes` (the two-process round trips
    force two: the CPU examples render one container by default)."""
    body = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["predictor"]["processes"] = processes.value
    isvc = next(m for m in render(VSSModel.model_validate(body)) if m["kind"] == "InferenceService")
    return {c["name"]: c for c in isvc["spec"]["predictor"]["containers"]}


@pytest.mark.parametrize("model", cases())
def test_a_single_process_server_reads_back_every_setting_both_containers_would_get(model: VSSModel) -> None:
    """One container's command line holds the transformer's settings (less the hop) and the predictor's model
    and batching settings; its name, version, ports and tracing are the transformer's."""
    spec, version = model.spec, model.spec.served_version()
    (container,) = _containers(model, Processes.SINGLE).values()
    assert container["name"] == PREDICTOR_CONTAINER
    assert container["command"] == ["python", "-m", "vss_cli.single_process"]
    flags, args = single_process_main.read_flags(container["args"])

    assert flags.transformer == transformer_flags_for(
        spec, model.metadata.name, IN_PROCESS, IN_PROCESS, TRANSFORMER_HTTP_PORT, TRANSFORMER_GRPC_PORT,
        version=version.name)
    two = predictor_flags_for(spec, version, model_path(version.storage_uri), TRANSFORMER_HTTP_PORT,
                              TRANSFORMER_GRPC_PORT, model_name=model.metadata.name)
    assert flags.predictor == dataclasses.replace(two, max_concurrency=spec.transformer.max_concurrency,
                                                  max_message_bytes=spec.transformer.max_request_bytes)
    assert args.predictor_host is None and not args.enable_predictor_health_check
    assert flags == single_process_flags(single_process_parser().parse_args(container["args"]))


@pytest.mark.parametrize("model", cases())
def test_the_predictor_reads_back_every_setting_the_operator_renders(model: VSSModel) -> None:
    spec, version = model.spec, model.spec.served_version()
    container = _containers(model)[PREDICTOR_CONTAINER]

    flags, max_request_bytes, _ = predictor_main.read_flags(container["args"])
    settings = predictor_main.settings_from(flags)

    batching = spec.predictor.batching
    assert (flags.model_name, flags.model_version) == (model.metadata.name, version.name)
    assert flags.model_path == model_path(version.storage_uri)
    assert flags.model_format == version.format.value
    assert flags.device == spec.predictor.device.value
    assert (flags.max_batch_size, flags.max_latency_ms, flags.max_inflight_batches) == (
        batching.max_batch_size, batching.max_latency_ms, batching.max_in_flight)
    assert flags.max_queue_size == batching.max_queue_size
    assert flags.max_concurrency == batching.max_queue_size + batching.max_in_flight * batching.max_batch_size
    assert flags.threads == spec.predictor.threads
    assert (flags.runtime, flags.precision) == (spec.predictor.runtime.value, spec.predictor.precision.value)
    assert (settings.runtime, settings.precision) == (flags.runtime, flags.precision)
    assert flags.allow_cpu_fallback == spec.predictor.allow_cpu_fallback
    assert settings.allow_cpu_fallback == spec.predictor.allow_cpu_fallback
    assert (flags.http_port, flags.grpc_port) == (PREDICTOR_HTTP_PORT, PREDICTOR_GRPC_PORT)
    assert flags.max_message_bytes == min(spec.transformer.max_request_bytes * 8, (1 << 31) - 1)
    if spec.task is Task.CLASSIFICATION:
        c = spec.classification
        assert flags.normalization == Normalization(tuple(c.mean), tuple(c.std))  # type: ignore[arg-type]
        assert flags.warmup_shape == (c.input_size, c.input_size)
    elif spec.task is Task.DETECTION:
        assert flags.normalization == Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        assert flags.warmup_shape[1] == spec.detection.input_size
    elif spec.task is Task.ANOMALY:
        assert flags.normalization is None
        assert flags.warmup_shape == (spec.anomaly.window, len(spec.anomaly.features))
    else:
        assert flags.normalization is None
        assert flags.warmup_shape == (spec.forecasting.lookback, len(spec.forecasting.features))
    # What the process then runs with.
    assert (settings.model_name, settings.version, str(settings.model_path)) == (
        flags.model_name, flags.model_version, flags.model_path)
    assert (settings.model_format, settings.device, settings.threads) == (
        flags.model_format, flags.device, flags.threads)
    assert (settings.max_batch_size, settings.max_latency_ms, settings.max_in_flight) == (
        batching.max_batch_size, batching.max_latency_ms, batching.max_in_flight)
    assert (settings.normalization, settings.warmup_shape) == (flags.normalization, flags.warmup_shape)
    assert settings.max_queue_size == batching.max_queue_size
    assert max_request_bytes > 0
    assert flags == predictor_flags_for(spec, version, model_path(version.storage_uri), PREDICTOR_HTTP_PORT,
                                        PREDICTOR_GRPC_PORT, model_name=model.metadata.name)


@pytest.mark.parametrize("model", cases())
def test_the_transformer_reads_back_every_setting_the_operator_renders(model: VSSModel) -> None:
    spec = model.spec
    container = _containers(model)[TRANSFORMER_CONTAINER]

    flags, args = transformer_main.read_flags(container["args"])
    task = transformer_main.build_task(flags)

    assert (flags.model_name, flags.model_version, flags.task) == (
        model.metadata.name, spec.version, spec.task)
    assert flags.params == getattr(spec.transformer, spec.task.value)
    assert flags.max_request_bytes == spec.transformer.max_request_bytes
    assert args.grpc_max_receive_message_length == spec.transformer.max_request_bytes
    assert (flags.max_concurrency, flags.request_timeout_ms) == (
        spec.transformer.max_concurrency, spec.transformer.request_timeout_ms)
    assert flags.predictor_timeout_s == args.predictor_request_timeout_seconds == (
        spec.transformer.predictor_timeout_seconds)
    assert (flags.predictor_grpc, flags.predictor_rest) == (
        f"localhost:{PREDICTOR_GRPC_PORT}", f"localhost:{PREDICTOR_HTTP_PORT}")
    assert (args.predictor_protocol, args.enable_predictor_health_check) == ("grpc-v2", True)
    assert (flags.http_port, flags.grpc_port) == (TRANSFORMER_HTTP_PORT, TRANSFORMER_GRPC_PORT)
    cache = spec.transformer.cache
    assert (flags.cache is None) is (cache is None)
    if cache is not None:
        assert flags.cache is not None
        assert (flags.cache.ttl_seconds, flags.cache.max_entry_bytes, flags.cache.timeout_ms) == (
            cache.ttl_seconds, cache.max_entry_bytes, cache.timeout_ms)
    assert type(task) is TASK_CLASSES[spec.task]
    assert task.params == flags.params  # type: ignore[attr-defined]
    images = getattr(task, "requests", None)
    if spec.task.value in ("detection", "classification"):
        assert (images.max_pixels, images.max_batch_images, images.max_batch_pixels) == (  # type: ignore[union-attr]
            spec.transformer.max_image_pixels, spec.transformer.max_batch_images, spec.transformer.max_batch_pixels)


@pytest.mark.parametrize("model", cases())
def test_the_flags_read_the_same_with_or_without_kserves_parser(model: VSSModel) -> None:
    """`vss_api` can read its own command lines without KServe installed (the operator image has none)."""
    containers = _containers(model)
    predictor_args = containers[PREDICTOR_CONTAINER]["args"]
    transformer_args = containers[TRANSFORMER_CONTAINER]["args"]

    standalone_p: PredictorFlags = predictor_flags(predictor_parser().parse_args(predictor_args))
    standalone_t: TransformerFlags = transformer_flags(transformer_parser().parse_args(transformer_args))

    assert standalone_p == predictor_main.read_flags(predictor_args)[0]
    assert standalone_t == transformer_main.read_flags(transformer_args)[0]
    assert standalone_t == transformer_flags_for(
        model.spec, model.metadata.name, f"localhost:{PREDICTOR_GRPC_PORT}", f"localhost:{PREDICTOR_HTTP_PORT}",
        TRANSFORMER_HTTP_PORT, TRANSFORMER_GRPC_PORT, version=model.spec.version)


def test_the_variants_really_move_every_predictor_setting_off_its_default() -> None:
    """Otherwise the round trip of a setting could pass because both sides fall back to the same default."""
    defaults = predictor_parser().parse_args(["--model_path", "m.onnx"])
    model = VSSModel.from_yaml_file(next(p for p in EXAMPLES if p.stem == "classification"))
    (_, _), (_, varied), (_, openvino) = list(_variants(model))
    flags = predictor_flags(predictor_parser().parse_args(_containers(openvino)[PREDICTOR_CONTAINER]["args"]))
    assert (flags.runtime, flags.precision) == ("openvino", "bf16") != (defaults.runtime, defaults.precision)
    flags = predictor_flags(predictor_parser().parse_args(_containers(varied)[PREDICTOR_CONTAINER]["args"]))
    assert flags.device == Device.GPU.value != defaults.device
    assert flags.threads == 3 != defaults.threads
    assert flags.max_batch_size == 17 != defaults.max_batch_size
    assert flags.max_latency_ms == 2.5 != defaults.max_latency_ms
    assert flags.max_inflight_batches == 3 != defaults.max_inflight_batches
    assert flags.max_queue_size == 19 != defaults.max_queue_size
    assert flags.max_concurrency == 19 + 3 * 17 != defaults.max_concurrency
    t_defaults = transformer_parser().parse_args(["--task", "classification", "--predictor_rest_host", "p:1"])
    t_flags = transformer_flags(transformer_parser().parse_args(_containers(varied)[TRANSFORMER_CONTAINER]["args"]))
    assert t_flags.max_concurrency == 23 != t_defaults.max_concurrency
    assert t_flags.request_timeout_ms == 2500 != t_defaults.request_timeout_ms
    assert t_flags.predictor_timeout_s == 7 != t_defaults.predictor_request_timeout_seconds
    assert t_flags.cache is not None and not t_defaults.cache
    assert (t_flags.cache.ttl_seconds, t_flags.cache.max_entry_bytes, t_flags.cache.timeout_ms) == (61, 4097, 7)
    assert (t_defaults.cache_ttl_seconds, t_defaults.cache_max_entry_bytes,
            t_defaults.cache_timeout_ms) != (61, 4097, 7)
    assert flags.normalization != defaults.normalize
    assert {p.stem for p in EXAMPLES} >= {"detection", "classification", "anomaly", "forecasting"}
    assert any(VSSModel.from_yaml_file(p).spec.served_version().format is ModelFormat.TORCHSCRIPT
               for p in EXAMPLES)


def test_a_renamed_flag_is_refused_by_the_container_not_ignored() -> None:
    model = VSSModel.from_yaml_file(EXAMPLES[0])
    args = [a.replace("--max_batch_size", "--max_batch") for a in _containers(model)[PREDICTOR_CONTAINER]["args"]]
    with pytest.raises(SystemExit):
        predictor_parser().parse_args(args)


@pytest.mark.parametrize("max_request_bytes", [256 * 1024 * 1024, 1 << 30])
def test_the_grpc_message_limits_at_the_largest_request_sizes_fit_what_grpc_can_hold(max_request_bytes: int) -> None:
    """From 256 MiB, eight requests' worth overflows gRPC's C int (2**31 - 1) and both processes would fail to
    start; the limit stops there, and the transformer's own receive limit is the request size itself."""
    model = VSSModel.from_yaml_file(EXAMPLES[0])
    body = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["transformer"]["maxRequestBytes"] = max_request_bytes
    spec = VSSModel.model_validate(body).spec
    predictor = predictor_flags_for(spec, spec.served_version(), "/m", 1, 2, model_name="m")
    transformer = transformer_flags_for(spec, "m", "localhost:2", "localhost:1", 3, 4)
    assert predictor.max_message_bytes == grpc_message_bytes(max_request_bytes) == GRPC_MAX_MESSAGE_BYTES
    args = predictor.args()
    for flag in ("--grpc_max_receive_message_length", "--grpc_max_send_message_length"):
        assert int(args[args.index(flag) + 1]) <= (1 << 31) - 1
    args = transformer.args()
    assert int(args[args.index("--grpc_max_receive_message_length") + 1]) == max_request_bytes


def test_the_grpc_message_limit_is_eight_requests_below_256_mib() -> None:
    assert grpc_message_bytes(32 * 1024 * 1024) == 256 * 1024 * 1024
    assert grpc_message_bytes(256 * 1024 * 1024 - 1024) == 8 * (256 * 1024 * 1024 - 1024)
