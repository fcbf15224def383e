"""The operator's per-VSSModel series: set from the status `advance` writes (phase, Ready, the traffic split),
replaced as the rollout moves, and gone with the model."""

from __future__ import annotations

from typing import Any

import kopf
from prometheus_client import CollectorRegistry

from tests.unit.vss_operator.test_handlers import GOOD, NAME, NAMESPACE, FakeKube, FakePrometheus, _model
from vss_operator.handlers import OperatorContext, advance, forget_deleted
from vss_operator.metrics import ModelMetrics, traffic_weights
from vss_operator.status import VSSModelStatus


def _status(**fields: Any) -> VSSModelStatus:
    return VSSModelStatus.model_validate(fields)


def _series(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for m in registry.collect() for s in m.samples
            if s.name == name}


def _weights(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {(dict(k)["version"], dict(k)["role"]): v for k, v in _series(registry, "vss_model_traffic_weight").items()}


def _phase(registry: CollectorRegistry) -> dict[str, float]:
    return {dict(k)["phase"]: v for k, v in _series(registry, "vss_model_phase").items()}


def test_the_traffic_split_follows_the_canary_weight() -> None:
    assert traffic_weights(_status(stableVersion="v1", phase="Stable")) == {("v1", "stable"): 100}
    assert traffic_weights(_status(stableVersion="v1", canaryVersion="v2", canaryWeight=25)) == {
        ("v1", "stable"): 75, ("v2", "canary"): 25}
    # Initializing and RolledBack keep the canary at 0%; a weight without a canary means nothing.
    assert traffic_weights(_status(stableVersion="v1", canaryVersion="v2", canaryWeight=0)) == {
        ("v1", "stable"): 100, ("v2", "canary"): 0}
    assert traffic_weights(_status(stableVersion="v1", canaryWeight=40)) == {("v1", "stable"): 100}
    assert traffic_weights(_status()) == {}


def test_one_phase_is_1_the_others_0_and_series_of_a_finished_canary_go() -> None:
    registry = CollectorRegistry()
    metrics = ModelMetrics(registry)
    ready = [{"type": "Ready", "status": "True", "reason": "InferenceServicesReady",
              "lastTransitionTime": "2026-01-01T00:00:00Z"}]

    metrics.observe("ns", "yolo", _status(phase="Progressing", stableVersion="v1", canaryVersion="v2",
                                          canaryWeight=10, conditions=ready))
    assert _phase(registry) == {"Stable": 0, "Progressing": 1, "Promoted": 0, "RolledBack": 0, "Failed": 0}
    assert registry.get_sample_value("vss_model_ready", {"namespace": "ns", "model_name": "yolo"}) == 1
    assert _weights(registry) == {("v1", "stable"): 90, ("v2", "canary"): 10}

    metrics.observe("ns", "yolo", _status(phase="Stable", stableVersion="v2"))
    assert _phase(registry)["Stable"] == 1 and _phase(registry)["Progressing"] == 0
    assert registry.get_sample_value("vss_model_ready", {"namespace": "ns", "model_name": "yolo"}) == 0
    assert _weights(registry) == {("v2", "stable"): 100}  # v1 is no longer routed to at all

    metrics.forget("ns", "yolo")
    metrics.forget("ns", "yolo")  # twice, or for a model never seen: nothing to do
    metrics.forget("ns", "other")
    assert _series(registry, "vss_model_phase") == {} and _series(registry, "vss_model_ready") == {}
    assert _weights(registry) == {}


async def test_advance_exports_the_rollout_it_wrote_and_forgets_a_deleted_model() -> None:
    kube, prometheus = FakeKube(_model("v1")), FakePrometheus(GOOD)
    registry = CollectorRegistry()
    ctx = OperatorContext(kube=kube, prometheus=prometheus, metrics=ModelMetrics(registry))  # type: ignore[arg-type]
    labels = {"namespace": NAMESPACE, "model_name": NAME}
    await advance(ctx, NAMESPACE, NAME, 1)
    assert registry.get_sample_value("vss_model_ready", labels) == 0  # yolo-v1 not ready yet
    kube.set_ready("v1")
    await advance(ctx, NAMESPACE, NAME, None)
    assert registry.get_sample_value("vss_model_ready", labels) == 1
    assert _phase(registry)["Stable"] == 1 and _weights(registry) == {("v1", "stable"): 100}

    kube.model["spec"]["version"] = "v2"
    await advance(ctx, NAMESPACE, NAME, 2)
    assert _phase(registry)["Progressing"] == 1
    assert _weights(registry) == {("v1", "stable"): 100, ("v2", "canary"): 0}  # initializing

    kube.model["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    await advance(ctx, NAMESPACE, NAME, None)
    assert _series(registry, "vss_model_phase") == {} and _weights(registry) == {}
    await ctx.requeues.close()


def test_the_deleted_event_of_a_vssmodel_takes_its_series_off() -> None:
    registry = CollectorRegistry()
    ctx = OperatorContext(kube=None, prometheus=None, metrics=ModelMetrics(registry))  # type: ignore[arg-type]
    ctx.metrics.observe(NAMESPACE, NAME, _status(phase="Stable", stableVersion="v1"))
    body = kopf.Body(_model("v1"))

    forget_deleted(event={"type": "MODIFIED", "object": {}}, body=body, memo=kopf.Memo(context=ctx))
    assert _phase(registry)["Stable"] == 1
    forget_deleted(event={"type": "DELETED", "object": {}}, body=body, memo=kopf.Memo(context=ctx))
    assert _phase(registry) == {} and _weights(registry) == {}
