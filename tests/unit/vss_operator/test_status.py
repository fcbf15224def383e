"""status_for: kstatus conditions of a VSSModel derived from its InferenceServices' own conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from vss_operator.render import render
from vss_operator.spec import VSSModel
from vss_operator.status import (
    APPLY_REJECTED,
    Condition,
    Failure,
    VSSModelStatus,
    failed_status,
    isvc_state,
    status_for,
    transitions,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def _model() -> VSSModel:
    return VSSModel.model_validate({
        "metadata": {"name": "yolo", "namespace": "vision", "uid": "u1", "generation": 4},
        "spec": {"task": "detection", "version": "v1",
                 "versions": [{"name": "v1", "storageUri": "s3://m/v1/model.onnx"}]},
    })


def _isvc(name: str = "yolo-v1", **status: Any) -> dict[str, Any]:
    return {"kind": "InferenceService", "metadata": {"name": name}, "status": status}


def _ready(value: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": "Ready", "status": value}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _status(observed: list[dict[str, Any]], previous: VSSModelStatus | None = None,
            now: datetime = T0) -> VSSModelStatus:
    model = _model()
    return status_for(model, render(model), observed, previous or VSSModelStatus(), now, 4)


def _types(status: VSSModelStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_ready_inferenceservice_makes_the_model_ready_and_stable() -> None:
    status = _status([_isvc(conditions=[_ready("True")])])

    assert _types(status) == {"Ready": ("True", "InferenceServicesReady")}
    assert status.phase == "Stable"
    assert status.observed_generation == 4
    assert status.stable_version == "v1"
    assert status.url == "http://yolo.vision.example.com"
    assert all(c.observed_generation == 4 for c in status.conditions)


def test_missing_inferenceservice_is_not_ready_and_reconciling() -> None:
    status = _status([])

    assert _types(status) == {
        "Ready": ("False", "InferenceServicePending"), "Reconciling": ("True", "Progressing")}
    assert status.phase == "Progressing"


def test_not_ready_inferenceservice_passes_its_reason_and_message_on() -> None:
    status = _status([_isvc(conditions=[_ready("False", "MinimumReplicasUnavailable", "0/1 replicas")])])

    ready = status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "MinimumReplicasUnavailable")
    assert ready.message == "InferenceService yolo-v1: 0/1 replicas"
    assert status.condition("Reconciling") is not None


def test_a_reason_kstatus_would_refuse_is_replaced_by_a_camelcase_one() -> None:
    status = _status([_isvc(conditions=[_ready("False", "not a reason!")])])

    assert _types(status)["Ready"] == ("False", "InferenceServiceNotReady")


def test_failed_model_load_is_stalled_not_reconciling() -> None:
    isvc = _isvc(conditions=[_ready("False", "ModelLoadFailed", "bad onnx")],
                 modelStatus={"transitionStatus": "BlockedByFailedLoad",
                              "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "bad onnx"}})

    status = _status([isvc])

    assert _types(status) == {"Ready": ("False", "ModelLoadFailed"), "Stalled": ("True", "ModelLoadFailed")}
    assert status.phase == "Failed"


def test_last_transition_time_is_kept_while_the_status_value_is_unchanged() -> None:
    first = _status([_isvc(conditions=[_ready("False", "A")])], now=T0)
    second = _status([_isvc(conditions=[_ready("False", "B")])], previous=first, now=T1)
    third = _status([_isvc(conditions=[_ready("True")])], previous=second, now=T1)

    assert second.condition("Ready").last_transition_time == T0  # type: ignore[union-attr]
    assert second.condition("Ready").reason == "B"  # type: ignore[union-attr]
    assert third.condition("Ready").last_transition_time == T1  # type: ignore[union-attr]


def test_conditions_owned_by_others_and_rollout_fields_are_carried_over() -> None:
    rollout = Condition(type="RolloutSucceeded", status="True", reason="Promoted", last_transition_time=T0)
    previous = VSSModelStatus(conditions=[rollout], canary_version="v2", canary_weight=10,
                              stable_version="v0", phase="Progressing")

    status = _status([_isvc(conditions=[_ready("True")])], previous=previous)

    assert status.condition("RolloutSucceeded") == rollout
    assert (status.stable_version, status.canary_version, status.canary_weight, status.phase) == (
        "v0", "v2", 10, "Progressing")


def test_failure_sets_stalled_with_its_reason_and_keeps_other_fields() -> None:
    previous = _status([_isvc(conditions=[_ready("True")])])

    status = failed_status(previous, Failure(APPLY_REJECTED, "webhook said no"), T1, 5)

    assert _types(status) == {"Ready": ("False", APPLY_REJECTED), "Stalled": ("True", APPLY_REJECTED)}
    assert status.phase == "Failed"
    assert status.observed_generation == 5
    assert status.url == previous.url


def test_as_patch_sends_null_for_fields_now_unset_so_merge_patch_removes_them() -> None:
    patch = VSSModelStatus(stable_version="v1").as_patch()

    assert patch["canaryVersion"] is None
    assert patch["stableVersion"] == "v1"


def test_a_status_that_does_not_parse_reads_as_empty() -> None:
    assert VSSModelStatus.from_body_status({"conditions": "nonsense"}) == VSSModelStatus()
    assert VSSModelStatus.from_body_status(None) == VSSModelStatus()


def test_status_round_trips_through_its_camelcase_json() -> None:
    status = _status([_isvc(conditions=[_ready("True")])])

    assert VSSModelStatus.from_body_status(status.as_patch()) == status


def test_becoming_ready_posts_a_normal_event_and_failing_a_warning() -> None:
    pending = _status([])
    ready = _status([_isvc(conditions=[_ready("True")])], previous=pending)
    failed = _status([_isvc(conditions=[_ready("False", "ModelLoadFailed")],
                            modelStatus={"transitionStatus": "BlockedByFailedLoad"})], previous=ready)

    assert [(e.type, e.reason) for e in transitions(VSSModelStatus(), pending)] == [
        ("Normal", "InferenceServicePending")]
    assert [(e.type, e.reason) for e in transitions(pending, ready)] == [("Normal", "InferenceServicesReady")]
    assert [(e.type, e.reason) for e in transitions(ready, failed)] == [
        ("Warning", "ModelLoadFailed"), ("Warning", "Stalled")]
    assert transitions(ready, ready) == []


def test_an_inferenceservice_without_status_is_pending() -> None:
    state = isvc_state("yolo-v1", {"kind": "InferenceService", "metadata": {"name": "yolo-v1"}})

    assert (state.ready, state.reason, state.stalled) == ("Unknown", "InferenceServicePending", False)
