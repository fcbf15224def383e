"""render and spec.tracing: both containers of a version are told the same collector and sampling ratio (the
flags `vss_api.serving_flags` owns) and the pod's resource attributes; a model nobody asked to trace is rendered
exactly as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from vss_api.serving_flags import (
    TracingFlags,
    predictor_flags,
    predictor_parser,
    single_process_flags,
    single_process_parser,
    transformer_flags,
    transformer_parser,
)
from vss_api.vssmodel import VSSModel
from vss_cli import main as cli
from vss_operator.render import PREDICTOR_CONTAINER, TRANSFORMER_CONTAINER, RenderConfig, render


def _model(processes: str = "two", **spec: Any) -> VSSModel:
    """Two containers unless `processes` says otherwise (a CPU model renders one by default)."""
    return VSSModel.model_validate({
        "metadata": {"name": "yolo", "namespace": "vision"},
        "spec": {"task": "detection", "version": "v1", "predictor": {"processes": processes},
                 "versions": [{"name": "v1", "storageUri": "s3://models/yolo/v1/model.onnx"}], **spec}})


def _containers(model: VSSModel, config: RenderConfig | None = None) -> dict[str, dict[str, Any]]:
    isvc = render(model, config or RenderConfig())[0]
    return {c["name"]: c for c in isvc["spec"]["predictor"]["containers"]}


def test_both_containers_send_their_spans_to_the_collector_the_spec_names_at_its_sampling_ratio() -> None:
    containers = _containers(_model(tracing={"endpoint": "http://otel.observability:4318", "samplingRatio": 0.2}))
    predictor = predictor_flags(predictor_parser().parse_args(containers[PREDICTOR_CONTAINER]["args"]))
    transformer = transformer_flags(transformer_parser().parse_args(containers[TRANSFORMER_CONTAINER]["args"]))
    assert predictor.tracing == transformer.tracing
    assert (predictor.tracing.endpoint, predictor.tracing.sampling_ratio) == (
        "http://otel.observability:4318/v1/traces", 0.2)
    for container in containers.values():
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == "k8s.namespace.name=vision,k8s.pod.name=$(POD_NAME)"


def test_a_single_process_server_is_told_the_collector_and_gets_the_pods_resource_attributes() -> None:
    (container,) = _containers(_model("single", tracing={"endpoint": "http://otel.observability:4318",
                                                         "samplingRatio": 0.2})).values()
    flags = single_process_flags(single_process_parser().parse_args(container["args"]))
    assert flags.transformer.tracing == flags.predictor.tracing == TracingFlags(
        "http://otel.observability:4318/v1/traces", 0.2)
    env = {e["name"]: e for e in container["env"]}
    assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == "k8s.namespace.name=vision,k8s.pod.name=$(POD_NAME)"


def test_the_operators_default_collector_serves_a_spec_that_names_none_and_the_specs_own_wins() -> None:
    config = RenderConfig(tracing_endpoint="http://default-collector:4318")
    default = _containers(_model(), config)[TRANSFORMER_CONTAINER]["args"]
    own = _containers(_model(tracing={"endpoint": "https://tempo.example.com"}), config)[TRANSFORMER_CONTAINER]["args"]
    assert default[default.index("--otlp_traces_endpoint") + 1] == "http://default-collector:4318/v1/traces"
    assert own[own.index("--otlp_traces_endpoint") + 1] == "https://tempo.example.com/v1/traces"


def test_without_a_collector_neither_container_is_told_to_trace_or_given_tracing_env() -> None:
    for container in _containers(_model(tracing={"samplingRatio": 0.5})).values():
        assert not [a for a in container["args"] if "trac" in a]
        assert not [e for e in container["env"] if e["name"] in ("POD_NAME", "OTEL_RESOURCE_ATTRIBUTES")]


def test_vss_render_and_the_operator_take_the_default_collector_from_a_flag_or_the_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "yolo.yaml"
    path.write_text(yaml.safe_dump(_model().model_dump(mode="json", by_alias=True, exclude={"status"})))
    for argv, environ in ((["--tracing-endpoint", "http://flag:4318"], None), ([], "http://env:4318")):
        if environ is not None:
            monkeypatch.setenv("VSS_TRACING_ENDPOINT", environ)
        assert cli.main(["render", str(path), *argv]) == 0
        isvc = next(yaml.safe_load_all(capsys.readouterr().out))
        args = isvc["spec"]["predictor"]["containers"][0]["args"]
        assert args[args.index("--otlp_traces_endpoint") + 1] == f"{environ or 'http://flag:4318'}/v1/traces"
