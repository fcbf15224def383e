"""status_for: kstatus conditions of a VSSModel derived from its InferenceServices' own conditions and the
rollout's decision; canary_readiness: how the rollout reads the canary InferenceService."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vss_api.vssmodel import VSSModel
from vss_operator.render import render
from vss_operator.rollout import (
    ANALYSIS_FAILED,
    ROLLOUT_STARTED,
    Check,
    HistoryRecord,
    Observations,
    RolloutDecision,
    RolloutProgress,
    RolloutStatus,
    decide,
)
from vss_operator.status import (
    APPLY_REJECTED,
    MAX_HISTORY,
    Condition,
    Failure,
    HistoryEntry,
    VSSModelStatus,
    canary_readiness,
    failed_status,
    isvc_state,
    status_for,
    transitions,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def _model(version: str = "v1", **rollout: Any) -> VSSModel:
    return VSSModel.model_validate({
        "metadata": {"name": "yolo", "namespace": "vision", "uid": "u1", "generation": 4},
        "spec": {"task": "detection", "version": version,
                 "versions": [{"name": "v1", "storageUri": "s3://m/v1/model.onnx"},
                              {"name": "v2", "storageUri": "s3://m/v2/model.onnx"}],
                 "rollout": {"steps": [{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "1m"}],
                             **rollout}},
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


def _progressing(stage: str, weight: int, step: int | None = 0) -> RolloutStatus:
    return RolloutStatus(phase="Progressing", stable_version="v1", canary_version="v2", canary_weight=weight,
                         progress=RolloutProgress(stage=stage, step=step, started_at=T0, stage_started_at=T0,
                                                  reason=ROLLOUT_STARTED, message="rolling out v2"))


def _status(observed: list[dict[str, Any]], previous: VSSModelStatus | None = None,
            now: datetime = T0, *, model: VSSModel | None = None,
            decision: RolloutDecision | None = None) -> VSSModelStatus:
    """The status after one decision: by default the one `decide` makes from `previous`."""
    model = model or _model()
    previous = previous or VSSModelStatus()
    if decision is None:
        decision = decide(model.spec, RolloutStatus.from_status(previous.as_patch()), Observations(), now)
    desired = render(model, stable_version=decision.stable_version, canary_version=decision.canary_version,
                     canary_weight=decision.canary_weight, mirror_percent=decision.mirror_percent)
    return status_for(model, desired, observed, previous, now, 4, decision)


def _ready_isvc(name: str = "yolo-v1") -> dict[str, Any]:
    return _isvc(name, conditions=[_ready("True")])


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
    assert status.phase == "Stable"  # no rollout: the version waits to come up, kstatus says so


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


def test_conditions_of_unknown_types_are_carried_over() -> None:
    other = Condition(type="example.com/Audited", status="True", reason="Checked", last_transition_time=T0)

    status = _status([_ready_isvc()], previous=VSSModelStatus(conditions=[other]))

    assert status.condition("example.com/Audited") == other


def test_the_rollout_fields_come_from_the_decision_not_from_the_previous_status() -> None:
    previous = VSSModelStatus(stable_version="v1", phase="Stable")
    decision = RolloutDecision(_progressing("Canary", 10))

    status = _status([_ready_isvc(), _ready_isvc("yolo-v2")], previous, model=_model("v2"), decision=decision)

    assert (status.stable_version, status.canary_version, status.canary_weight, status.phase) == (
        "v1", "v2", 10, "Progressing")
    assert status.rollout == decision.status.progress
    assert _types(status) == {"Ready": ("True", "InferenceServicesReady"),
                              "Reconciling": ("True", ROLLOUT_STARTED),
                              "RolloutSucceeded": ("Unknown", ROLLOUT_STARTED)}
    patch = status.as_patch()
    assert patch["rollout"]["stage"] == "Canary" and patch["rollout"]["lastCheck"] is None


def test_a_new_version_starts_a_rollout_in_the_status() -> None:
    previous = _status([_ready_isvc()])

    status = _status([_ready_isvc()], previous, model=_model("v2"))

    assert (status.phase, status.stable_version, status.canary_version, status.canary_weight) == (
        "Progressing", "v1", "v2", 0)
    assert status.rollout is not None and status.rollout.stage == "Initializing"


def test_a_canary_still_initializing_at_zero_percent_leaves_the_model_ready() -> None:
    decision = RolloutDecision(_progressing("Initializing", 0, step=None))

    status = _status([_ready_isvc()], model=_model("v2"), decision=decision)

    assert _types(status)["Ready"] == ("True", "InferenceServicesReady")
    assert _types(status)["Reconciling"] == ("True", ROLLOUT_STARTED)


def test_a_canary_that_takes_traffic_and_is_not_ready_makes_the_model_unready() -> None:
    decision = RolloutDecision(_progressing("Canary", 10))
    canary = _isvc("yolo-v2", conditions=[_ready("False", "MinimumReplicasUnavailable", "0/1")])

    status = _status([_ready_isvc(), canary], model=_model("v2"), decision=decision)

    assert _types(status)["Ready"] == ("False", "MinimumReplicasUnavailable")
    assert status.condition("Ready").message == "InferenceService yolo-v2: 0/1"  # type: ignore[union-attr]


def test_a_rollback_stalls_with_the_rollouts_reason_and_does_not_judge_the_kept_canary() -> None:
    before = _status([_ready_isvc(), _ready_isvc("yolo-v2")], model=_model("v2"),
                     decision=RolloutDecision(_progressing("Canary", 10)))
    rolled_back = RolloutStatus(phase="RolledBack", stable_version="v1", canary_version="v2", canary_weight=0,
                                progress=RolloutProgress(reason=ANALYSIS_FAILED, message="v2 rolled back: errors"))
    decision = RolloutDecision(rolled_back, history=HistoryRecord("v2", "RolledBack", T1, "v2 rolled back: errors"))
    failing_canary = _isvc("yolo-v2", conditions=[_ready("False", "MinimumReplicasUnavailable")])

    status = _status([_ready_isvc(), failing_canary], before, T1, model=_model("v2"), decision=decision)

    assert _types(status) == {"Ready": ("True", "InferenceServicesReady"), "Stalled": ("True", ANALYSIS_FAILED),
                              "RolloutSucceeded": ("False", ANALYSIS_FAILED)}
    assert (status.phase, status.canary_version, status.canary_weight) == ("RolledBack", "v2", 0)
    assert [(h.version, h.result) for h in status.history] == [("v2", "RolledBack")]
    # The rollout posts its own Event about the rollback: no second one for Stalled.
    assert transitions(before, status) == []


def test_history_keeps_the_last_entries_only() -> None:
    old = [HistoryEntry(version=f"v{i}", result="Promoted", at=T0) for i in range(MAX_HISTORY)]
    promoted = RolloutStatus(phase="Promoted", stable_version="v2",
                             progress=RolloutProgress(reason="Promoted", message="v2 promoted"))
    decision = RolloutDecision(promoted, history=HistoryRecord("v2", "Promoted", T1, "v2 promoted"))

    status = _status([_ready_isvc("yolo-v2")], VSSModelStatus(history=old), T1, model=_model("v2"),
                     decision=decision)

    assert len(status.history) == MAX_HISTORY
    assert status.history[0].version == "v1" and status.history[-1].version == "v2"
    assert status.history[-1].message == "v2 promoted"


def test_the_last_check_stays_in_last_analysis_with_its_thresholds_after_the_promotion() -> None:
    model = _model("v2")
    canary = VSSModelStatus.model_validate(_progressing("Canary", 50, step=1).as_status_fields() | {
        "stableVersion": "v1"})
    check = Check(verdict="Pass", at=T1, requests=240.0, error_rate=0.0, p95_latency_ms=12.5,
                  message="error rate 0.00% <= 1.00%, p95 latency 12.5ms <= 80ms, 240 requests")
    promoted = RolloutStatus(phase="Promoted", stable_version="v2",
                             progress=RolloutProgress(reason="Promoted", message="v2 promoted"))
    decision = RolloutDecision(promoted, check=check, history=HistoryRecord("v2", "Promoted", T1, "v2 promoted"))

    status = _status([_ready_isvc("yolo-v2")], canary, T1, model=model, decision=decision)
    later = _status([_ready_isvc("yolo-v2")], status, T1 + timedelta(minutes=1), model=model)

    for kept in (status, later):
        assert kept.last_analysis is not None
        assert kept.last_analysis.model_dump(by_alias=True, exclude={"at", "message"}) == {
            "version": "v2", "weight": 50, "verdict": "Pass", "requests": 240.0, "errorRate": 0.0,
            "p95LatencyMs": 12.5, "maxErrorRate": 0.01, "maxP95LatencyMs": 80.0, "minRequests": 10}


def test_a_history_entry_says_why_it_ended_what_served_meanwhile_and_when_it_began() -> None:
    model = _model("v2")
    before = _status([_ready_isvc()])
    started = _status([_ready_isvc()], before, T0, model=model)  # RolloutStarted: v2 initializing
    rolled_back = decide(model.spec, RolloutStatus.from_status(started.as_patch()),
                         Observations(canary="Failed"), T1)

    status = _status([_ready_isvc()], started, T1, model=model, decision=rolled_back)

    entry = status.history[-1]
    assert (entry.version, entry.result, entry.reason, entry.stable_version) == (
        "v2", "RolledBack", "CanaryFailed", "v1")
    assert entry.started_at == T0 and entry.at == T1


def test_a_stable_version_that_will_not_start_makes_the_phase_failed() -> None:
    isvc = _isvc(conditions=[_ready("False", "ModelLoadFailed", "bad onnx")],
                 modelStatus={"transitionStatus": "BlockedByFailedLoad"})

    status = _status([isvc], VSSModelStatus(stable_version="v1", phase="Stable"))

    assert status.phase == "Failed"
    assert RolloutStatus.from_status(status.as_patch()).phase == "Stable"  # the rollout reads it back


def _canary(**status: Any) -> dict[str, Any]:
    return {"kind": "InferenceService", "metadata": {"name": "yolo-v2", "generation": 1}, "status": status}


@pytest.mark.parametrize(("observed", "expected"), [
    ([], "Pending"),
    ([_canary()], "Pending"),
    ([_canary(conditions=[_ready("False", "MinimumReplicasUnavailable")])], "Pending"),
    ([_canary(conditions=[_ready("True")])], "Ready"),
    ([_canary(conditions=[_ready("False", "ModelLoadFailed")],
              modelStatus={"transitionStatus": "BlockedByFailedLoad"})], "Failed"),
], ids=["missing", "no status yet", "not ready", "ready", "failed to load"])
def test_the_canary_is_read_from_its_own_inferenceservice(observed: list[dict[str, Any]], expected: str) -> None:
    assert canary_readiness(_model("v2"), _progressing("Initializing", 0, None), observed) == expected


def _knative_isvc(version: str, generation: int, observed: int, created: str, ready: str) -> dict[str, Any]:
    return {"kind": "InferenceService",
            "metadata": {"name": "yolo", "generation": generation, "labels": {"serving.vss.ai/version": version}},
            "status": {"observedGeneration": observed, "conditions": [_ready("True")],
                       "components": {"predictor": {"latestCreatedRevision": created,
                                                    "latestReadyRevision": ready}}}}


@pytest.mark.parametrize(("isvc", "expected"), [
    (_knative_isvc("v1", 1, 1, "r1", "r1"), "Pending"),
    (_knative_isvc("v2", 2, 1, "r1", "r1"), "Pending"),
    (_knative_isvc("v2", 2, 2, "r2", "r1"), "Pending"),
    (_knative_isvc("v2", 2, 2, "r2", "r2"), "Ready"),
], ids=["still the stable spec", "not reconciled yet", "new revision not ready", "new revision ready"])
def test_with_knative_the_canary_is_ready_once_its_revision_is(isvc: dict[str, Any], expected: str) -> None:
    model = _model("v2", trafficRouter="knative")

    assert canary_readiness(model, _progressing("Initializing", 0, None), [isvc]) == expected


def test_a_check_in_the_rollout_block_survives_the_status_round_trip() -> None:
    check = Check(verdict="Pass", at=T1, requests=40.0, error_rate=0.0, p95_latency_ms=12.5, message="ok")
    progress = _progressing("Canary", 10).progress.model_copy(update={"last_check": check})
    decision = RolloutDecision(RolloutStatus(phase="Progressing", stable_version="v1", canary_version="v2",
                                             canary_weight=10, progress=progress))

    status = _status([_ready_isvc(), _ready_isvc("yolo-v2")], model=_model("v2"), decision=decision)

    assert RolloutStatus.from_status(status.as_patch()) == decision.status


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
