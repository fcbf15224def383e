"""render's NetworkPolicy: callers reach the transformer's ports, the scrape the metrics ports, and nothing from
outside the pod reaches the predictor's own ports."""

from __future__ import annotations

from typing import Any

import pytest

from vss_api.vssmodel import VSSModel
from vss_operator.render import (
    PREDICTOR_GRPC_PORT,
    PREDICTOR_HTTP_PORT,
    TRANSFORMER_GRPC_PORT,
    TRANSFORMER_HTTP_PORT,
    RenderConfig,
    child_selector,
    render,
)

UID = "5d0b6f3e-8c1a-4c3f-9f6e-7b2a1d4e9c10"


def _model(name: str = "yolo", **spec: Any) -> VSSModel:
    return VSSModel.model_validate({
        "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
        "metadata": {"name": name, "namespace": "vision", "uid": UID},
        "spec": {"task": "detection", "version": "v2",
                 "versions": [{"name": "v1", "storageUri": "s3://models/yolo/v1.onnx"},
                              {"name": "v2", "storageUri": "s3://models/yolo/v2.onnx"}], **spec}})


def _policies(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == "NetworkPolicy"]


def _policy(model: VSSModel, config: RenderConfig | None = None, **kwargs: Any) -> dict[str, Any]:
    (policy,) = _policies(render(model, config or RenderConfig(), **kwargs))
    return policy


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector evaluated as the apiserver does (matchLabels and the four operators)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        held = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not held:
            return False
    return True


def _kserve_pod_labels(isvc: dict[str, Any]) -> dict[str, str]:
    """The labels KServe v0.20 gives the InferenceService's predictor pods (components/predictor.go,
    buildObjectMeta, and the Deployment's `app`); tests/integration checks them on KServe's real Pods."""
    name = isvc["metadata"]["name"]
    return {**isvc["metadata"]["labels"], **isvc["spec"]["predictor"]["labels"],
            "serving.kserve.io/inferenceservice": name, "component": "predictor", "app": f"isvc.{name}-predictor"}


def _ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule["ports"]}


def test_by_default_anyone_reaches_the_transformer_and_only_the_monitoring_namespace_the_metrics_ports() -> None:
    policy = _policy(_model(predictor={"processes": "two"}))

    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    serving, metrics = policy["spec"]["ingress"]
    assert serving == {"ports": [{"protocol": "TCP", "port": TRANSFORMER_HTTP_PORT},
                                 {"protocol": "TCP", "port": TRANSFORMER_GRPC_PORT}]}
    assert metrics == {
        "ports": [{"protocol": "TCP", "port": PREDICTOR_HTTP_PORT}, {"protocol": "TCP", "port": TRANSFORMER_HTTP_PORT}],
        "from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}]}}]}


@pytest.mark.parametrize("processes", ["two", "single"])
def test_the_predictors_grpc_port_has_no_rule_and_its_rest_port_only_the_scrape(processes: str) -> None:
    """Every port the pod serves is accounted for: the transformer's to callers, the metrics ports to the scrape,
    the predictor's gRPC port to no one (the transformer calls both predictor ports on localhost). A
    single-process pod serves everything on the transformer's ports, and the policy admits no other."""
    model = _model(predictor={"processes": processes})
    manifests = render(model)
    declared = {p["containerPort"] for m in manifests if m["kind"] == "InferenceService"
                for c in m["spec"]["predictor"]["containers"] for p in c.get("ports", [])}
    serving, metrics = _policies(manifests)[0]["spec"]["ingress"]

    predictor_ports = {PREDICTOR_HTTP_PORT, PREDICTOR_GRPC_PORT} if processes == "two" else set()
    assert declared == {TRANSFORMER_HTTP_PORT, TRANSFORMER_GRPC_PORT} | predictor_ports
    assert _ports(serving) | _ports(metrics) <= declared
    assert _ports(serving) == {TRANSFORMER_HTTP_PORT, TRANSFORMER_GRPC_PORT}
    assert PREDICTOR_GRPC_PORT not in _ports(serving) | _ports(metrics)
    assert PREDICTOR_HTTP_PORT not in _ports(serving)
    # The scrape reaches what the pods' scrape annotation and the chart's PodMonitor name.
    isvc = manifests[0]
    assert int(isvc["spec"]["predictor"]["annotations"]["prometheus.io/port"]) in _ports(metrics)


def test_ingress_from_and_metrics_from_become_the_rules_peers_as_written() -> None:
    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kserve"}},
               "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["gateway"]}]}}
    workers = {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "stream-worker"}}}
    everywhere = {"namespaceSelector": {}}
    prometheus = {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    model = _model(networkPolicy={"ingressFrom": [gateway, workers, everywhere], "metricsFrom": [prometheus]})

    serving, metrics = _policy(model)["spec"]["ingress"]

    assert serving["from"] == [gateway, workers, everywhere]
    assert metrics["from"] == [prometheus]


def test_the_operators_metrics_namespaces_are_the_default_and_none_leaves_no_metrics_rule() -> None:
    config = RenderConfig(metrics_namespaces=("prometheus", "observability"))
    (_, metrics) = _policy(_model(), config)["spec"]["ingress"]
    assert metrics["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["prometheus", "observability"]

    (serving,) = _policy(_model(), RenderConfig(metrics_namespaces=()))["spec"]["ingress"]
    assert _ports(serving) == {TRANSFORMER_HTTP_PORT, TRANSFORMER_GRPC_PORT}
    # A VSSModel's own metricsFrom needs no operator default.
    model = _model(networkPolicy={"metricsFrom": [{"namespaceSelector": {}}]})
    (_, metrics) = _policy(model, RenderConfig(metrics_namespaces=()))["spec"]["ingress"]
    assert metrics["from"] == [{"namespaceSelector": {}}]


def test_one_policy_selects_the_pods_kserve_makes_for_every_version_and_no_other_models_pods() -> None:
    model = _model()
    manifests = render(model, stable_version="v1", canary_version="v2", canary_weight=10)
    (policy,) = _policies(manifests)
    selector = policy["spec"]["podSelector"]
    others = [m for name in ("yolox", "yolo-v2", "yol") for m in render(_model(name))]

    pods = [_kserve_pod_labels(m) for m in manifests if m["kind"] == "InferenceService"]
    assert [p["serving.vss.ai/version"] for p in pods] == ["v1", "v2"]
    assert all(_matches(selector, labels) for labels in pods)
    assert not any(_matches(selector, _kserve_pod_labels(m)) for m in others if m["kind"] == "InferenceService")
    # Nor the InferenceService objects themselves or anything without KServe's pod labels.
    assert not any(_matches(selector, m["metadata"]["labels"]) for m in manifests)


def test_the_policy_is_a_child_like_the_others_labelled_and_owned_by_the_vssmodel() -> None:
    manifests = render(_model())
    policy = _policies(manifests)[0]
    route = next(m for m in manifests if m["kind"] == "HTTPRoute")

    assert policy["metadata"]["name"] == "yolo" and policy["metadata"]["namespace"] == "vision"
    assert policy["metadata"]["ownerReferences"] == route["metadata"]["ownerReferences"]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == UID
    assert _matches({"matchLabels": dict(pair.split("=") for pair in child_selector("yolo").split(","))},
                    policy["metadata"]["labels"])
    assert policy["metadata"]["labels"]["app.kubernetes.io/component"] == "network-policy"


def test_disabling_it_renders_no_policy_so_the_operator_prunes_the_one_it_made() -> None:
    manifests = render(_model(networkPolicy={"enabled": False}))

    assert _policies(manifests) == []
    assert {m["kind"] for m in manifests} == {"InferenceService", "HTTPRoute"}


def test_knative_mode_renders_no_policy_since_its_activator_and_queue_proxy_need_ports_of_their_own() -> None:
    manifests = render(_model(rollout={"trafficRouter": "knative"}))

    assert [m["kind"] for m in manifests] == ["InferenceService"]
