"""The VSSModel `status` (kstatus conditions Ready/Reconciling/Stalled, the rollout's fields) as pydantic
models, and the pure functions that derive it from the child InferenceServices' own conditions and the
rollout's decision."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from vss_api.vssmodel import READY, RECONCILING, ROLLOUT_SUCCEEDED, STALLED, ConditionStatus, Phase, VSSModel
from vss_operator.objects import Event
from vss_operator.render import VERSION_LABEL
from vss_operator.rollout import (
    ROLLED_BACK_REASONS,
    Check,
    Readiness,
    RolloutDecision,
    RolloutProgress,
    RolloutStatus,
    Verdict,
)

# Condition reasons (CamelCase constants, as metav1.Condition wants them).
INFERENCE_SERVICES_READY = "InferenceServicesReady"
INFERENCE_SERVICE_NOT_READY = "InferenceServiceNotReady"
INFERENCE_SERVICE_PENDING = "InferenceServicePending"
INFERENCE_SERVICE_FAILED = "InferenceServiceFailed"
PROGRESSING = "Progressing"
INVALID_SPEC = "InvalidSpec"
APPLY_REJECTED = "ApplyRejected"
APPLY_FORBIDDEN = "ApplyForbidden"

REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
# KServe reports these when a child will not become ready without a change from a person.
_TERMINAL_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})
_TERMINAL_REASONS = frozenset({
    "ProgressDeadlineExceeded", "RevisionFailed", "ModelLoadFailed", "InvalidSpec"})
MAX_MESSAGE = 32768
MAX_HISTORY = 20


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    """One condition (metav1.Condition's fields)."""

    type: Annotated[str, Field(pattern=CONDITION_TYPE_PATTERN, max_length=316, description=(
        "Ready (the versions that take traffic are ready), Reconciling (a rollout or a child is under way), "
        "Stalled (nothing changes without a person) or RolloutSucceeded (how the last rollout ended)."))]
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(pattern=REASON_PATTERN, min_length=1, max_length=1024, description=(
        "Why, as one CamelCase word (InferenceServicesReady, StepAdvanced, AnalysisFailed, ...)."))]
    message: Annotated[str, Field(max_length=MAX_MESSAGE, description="Why, in words for a person.")] = ""
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: Annotated[int | None, Field(ge=0, description=(
        "The metadata.generation this condition was set for."))] = None


class HistoryEntry(StatusModel):
    """A rollout that ended."""

    version: Annotated[str, Field(max_length=20, description="The version that was rolled out.")]
    result: Literal["Promoted", "RolledBack", "Failed"] = Field(description=(
        "Promoted (it serves all traffic now), RolledBack (traffic went back to the stable version) or Failed."))
    at: datetime = Field(description="When the rollout ended.")
    message: Annotated[str | None, Field(max_length=1024, description="Why it ended so, with the numbers.")] = None
    reason: Annotated[str | None, Field(max_length=64, description=(
        "Why, as one CamelCase word (Promoted, AnalysisFailed, NoAnalysisData, RolloutAborted, ...)."))] = None
    stable_version: Annotated[str | None, Field(max_length=20, description=(
        "The version that served the stable traffic while this one rolled out."))] = None
    started_at: datetime | None = Field(default=None, description="When the rollout began.")


class LastAnalysis(StatusModel):
    """The last check of a canary, with the thresholds it was judged against: what `kubectl describe` shows
    after the rollout's own block is gone."""

    version: Annotated[str, Field(max_length=20, description="The canary version that was checked.")]
    weight: Annotated[int, Field(ge=0, le=100, description=(
        "Percent of traffic the canary took during the check (0 in the shadow stage)."))] = 0
    verdict: Verdict = Field(description="Pass, Fail, NoData (too little traffic) or Error (metrics unreadable).")
    at: datetime = Field(description="When the check ran; it covers spec.rollout.analysis.interval before.")
    requests: Annotated[float | None, Field(ge=0, description="Canary requests in the interval.")] = None
    error_rate: Annotated[float | None, Field(ge=0, le=1, description=(
        "Share of the canary's requests that ended in a server error."))] = None
    p95_latency_ms: Annotated[float | None, Field(ge=0, description=(
        "95th percentile of the canary's request duration, milliseconds."))] = None
    max_error_rate: Annotated[float, Field(ge=0, le=1, description=(
        "The threshold: spec.rollout.analysis.maxErrorRate."))]
    max_p95_latency_ms: Annotated[float, Field(gt=0, description=(
        "The threshold: spec.rollout.analysis.maxP95LatencyMs."))]
    min_requests: Annotated[int, Field(ge=1, description=(
        "Fewest requests for the check to count: spec.rollout.analysis.minRequests."))]
    message: Annotated[str, Field(max_length=1024, description="The verdict in words.")] = ""


class VSSModelStatus(StatusModel):
    observed_generation: Annotated[int | None, Field(ge=0, description=(
        "The metadata.generation this status describes."))] = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16, description=(
        "kstatus conditions Ready, Reconciling and Stalled, and RolloutSucceeded, keyed by type."),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    stable_version: Annotated[str | None, Field(max_length=20, description=(
        "The version that serves the stable traffic."))] = None
    canary_version: Annotated[str | None, Field(max_length=20, description=(
        "The version under a canary rollout, if any."))] = None
    canary_weight: Annotated[int | None, Field(ge=0, le=100, description=(
        "Percent of traffic sent to the canary version."))] = None
    phase: Phase | None = Field(default=None, description=(
        "Stable, Progressing (a rollout is under way), Promoted, RolledBack, or Failed (the version that "
        "should serve will not start without a change)."))
    url: str | None = Field(default=None, description="Where clients reach the model (the stable route's host).")
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY, description=(
        f"Rollouts that ended, oldest first (the last {MAX_HISTORY})."))
    last_analysis: LastAnalysis | None = None
    rollout: RolloutProgress | None = Field(default=None, description=(
        "Where the rollout is, in enough detail for a restarted operator to resume it."))

    @classmethod
    def from_body_status(cls, status: Mapping[str, Any] | None) -> VSSModelStatus:
        """What the object says now; a status written by someone else that does not parse reads as empty."""
        try:
            return cls.model_validate(dict(status or {}))
        except ValueError:
            return cls()

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def as_patch(self) -> dict[str, Any]:
        """JSON for a merge patch of `status`: fields now unset are sent as null, so they are removed."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)


@dataclass(frozen=True)
class ChildState:
    """What one child InferenceService says about itself."""

    name: str
    ready: ConditionStatus
    reason: str
    message: str
    stalled: bool
    url: str | None


@dataclass(frozen=True)
class Failure:
    """The reconcile could not apply the children: the spec or the apiserver refused them."""

    reason: str
    message: str


def _camel_reason(reason: str | None, fallback: str) -> str:
    if reason and re.match(REASON_PATTERN, reason) and len(reason) <= 1024:
        return reason
    return fallback


def isvc_state(name: str, isvc: Mapping[str, Any] | None) -> ChildState:
    """Read a KServe InferenceService's own `Ready` condition and model status (None: not created yet)."""
    if isvc is None:
        return ChildState(name, "Unknown", INFERENCE_SERVICE_PENDING,
                          f"InferenceService {name} does not exist yet", False, None)
    status = isvc.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == READY), None)
    model_status = status.get("modelStatus") or {}
    failure = model_status.get("lastFailureInfo") or {}
    stalled = model_status.get("transitionStatus") in _TERMINAL_TRANSITIONS
    if ready is None:
        return ChildState(name, "Unknown", INFERENCE_SERVICE_PENDING,
                          f"InferenceService {name} has not reported readiness yet", stalled,
                          status.get("url"))
    value: ConditionStatus = ready.get("status") if ready.get("status") in ("True", "False") else "Unknown"
    reason = _camel_reason(ready.get("reason") or failure.get("reason"), INFERENCE_SERVICE_NOT_READY)
    message = str(ready.get("message") or failure.get("message") or "")
    stalled = stalled or (value == "False" and reason in _TERMINAL_REASONS)
    return ChildState(name, value, reason, message, stalled, status.get("url"))


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of `new.type`, keeping lastTransitionTime when its status did not change."""
    old = next((c for c in conditions if c.type == new.type), None)
    if old is not None and old.status == new.status:
        new = new.model_copy(update={"last_transition_time": old.last_transition_time})
    return [*(c for c in conditions if c.type != new.type), new]


def _remove_condition(conditions: Sequence[Condition], type_: str) -> list[Condition]:
    return [c for c in conditions if c.type != type_]


def _condition(type_: str, value: ConditionStatus, reason: str, message: str, now: datetime,
               generation: int | None) -> Condition:
    return Condition(type=type_, status=value, reason=reason, message=message[:MAX_MESSAGE],
                     last_transition_time=now, observed_generation=generation)


def _ordered(conditions: list[Condition]) -> list[Condition]:
    order = {READY: 0, RECONCILING: 1, STALLED: 2}
    return sorted(conditions, key=lambda c: (order.get(c.type, 3), c.type))


def failed_status(previous: VSSModelStatus, failure: Failure, now: datetime,
                  observed_generation: int | None) -> VSSModelStatus:
    """Ready=False and Stalled=True with the failure's reason: nothing changes until the spec does."""
    conditions = set_condition(previous.conditions, _condition(
        READY, "False", failure.reason, failure.message, now, observed_generation))
    conditions = set_condition(conditions, _condition(
        STALLED, "True", failure.reason, failure.message, now, observed_generation))
    conditions = _remove_condition(conditions, RECONCILING)
    return previous.model_copy(update={
        "observed_generation": observed_generation, "conditions": _ordered(conditions), "phase": "Failed"})


def retrying_status(previous: VSSModelStatus, failure: Failure, now: datetime,
                    observed_generation: int | None, retry_in_s: float) -> VSSModelStatus:
    """Ready=False and Reconciling=True with the failure's reason, and when the next try is: the operator tries
    again by itself (a 403 from a ResourceQuota or an admission webhook may pass), so it is not Stalled."""
    message = f"{failure.message}; trying again in {retry_in_s:g}s"
    conditions = set_condition(previous.conditions, _condition(
        READY, "False", failure.reason, message, now, observed_generation))
    conditions = set_condition(conditions, _condition(
        RECONCILING, "True", failure.reason, message, now, observed_generation))
    conditions = _remove_condition(conditions, STALLED)
    return previous.model_copy(update={"observed_generation": observed_generation,
                                       "conditions": _ordered(conditions)})


def status_for(
    model: VSSModel,
    desired: Sequence[Mapping[str, Any]],
    observed: Iterable[Mapping[str, Any]],
    previous: VSSModelStatus,
    now: datetime,
    observed_generation: int | None,
    decision: RolloutDecision,
) -> VSSModelStatus:
    """The status a VSSModel should show, given the manifests render made from `decision` (`desired`), the
    children the apiserver holds (`observed`) and the rollout's `decision`.

    Ready says whether the versions that take traffic are ready (a canary still initializing at 0%, or
    one kept after a rollback, does not make the model unready); Reconciling and Stalled combine what the
    children and the rollout say; the phase, versions, weight and `rollout` block are the decision's;
    RolloutSucceeded is the rollout's; a rollout that ended is appended to `history`."""
    by_name = {o["metadata"]["name"]: o for o in observed if o.get("kind") == "InferenceService"}
    serving = _serving_versions(decision)
    wanted = [d["metadata"]["name"] for d in desired if d.get("kind") == "InferenceService"
              and (model.spec.rollout.traffic_router == "knative"
                   or (d["metadata"].get("labels") or {}).get(VERSION_LABEL) in serving)]
    children = [isvc_state(name, by_name.get(name)) for name in wanted]
    not_ready = [c for c in children if c.ready != "True"]
    stalled = next((c for c in not_ready if c.stalled), None)
    rollout = {c.type: c for c in decision.conditions()}

    def cond(type_: str, value: ConditionStatus, reason: str, message: str) -> Condition:
        return _condition(type_, value, reason, message, now, observed_generation)

    conditions = list(previous.conditions)
    if not_ready:
        first = stalled or not_ready[0]
        message = f"InferenceService {first.name}: {first.message}".rstrip(": ")
        conditions = set_condition(conditions, cond(READY, "False", first.reason, message))
    else:
        names = ", ".join(c.name for c in children)
        conditions = set_condition(conditions, cond(
            READY, "True", INFERENCE_SERVICES_READY, f"InferenceService {names} ready"))

    # kstatus: Stalled (nothing changes without a person) wins over Reconciling.
    if STALLED in rollout:
        c = rollout[STALLED]
        conditions = set_condition(conditions, cond(STALLED, c.status, c.reason, c.message))
    elif stalled is not None:
        message = f"InferenceService {stalled.name}: {stalled.message}".rstrip(": ")
        conditions = set_condition(conditions, cond(STALLED, "True", stalled.reason, message))
    else:
        conditions = _remove_condition(conditions, STALLED)
    if STALLED in rollout or stalled is not None:
        conditions = _remove_condition(conditions, RECONCILING)
    elif RECONCILING in rollout:
        c = rollout[RECONCILING]
        conditions = set_condition(conditions, cond(RECONCILING, c.status, c.reason, c.message))
    elif not_ready:
        conditions = set_condition(conditions, cond(
            RECONCILING, "True", PROGRESSING, f"waiting for InferenceService {not_ready[0].name} to become ready"))
    else:
        conditions = _remove_condition(conditions, RECONCILING)
    if ROLLOUT_SUCCEEDED in rollout:
        c = rollout[ROLLOUT_SUCCEEDED]
        conditions = set_condition(conditions, cond(ROLLOUT_SUCCEEDED, c.status, c.reason, c.message))
    else:
        conditions = _remove_condition(conditions, ROLLOUT_SUCCEEDED)

    fields = decision.status.as_status_fields()
    phase: Phase = fields["phase"]
    if stalled is not None and phase == "Stable":
        phase = "Failed"  # the version that should serve will not start without a change
    history = list(previous.history)
    if decision.history is not None:
        entry = HistoryEntry.model_validate({
            **decision.history.as_json(),
            "reason": decision.transition.reason if decision.transition is not None else None,
            "stableVersion": previous.stable_version,
            "startedAt": previous.rollout.started_at if previous.rollout is not None else None})
        history = [*history, entry][-MAX_HISTORY:]
    last_analysis = previous.last_analysis
    if decision.check is not None:
        last_analysis = _last_analysis(model, previous, decision.check)
    return previous.model_copy(update={
        "observed_generation": observed_generation,
        "conditions": _ordered(conditions),
        "stable_version": fields["stableVersion"],
        "canary_version": fields["canaryVersion"],
        "canary_weight": fields["canaryWeight"],
        "phase": phase,
        "rollout": decision.status.progress,
        "history": history,
        "last_analysis": last_analysis,
        "url": _url(desired, children),
    })


def _last_analysis(model: VSSModel, previous: VSSModelStatus, check: Check) -> LastAnalysis:
    """The check with what it was judged against; the version and weight are those it ran at, before the
    decision moved on."""
    analysis = model.spec.rollout.analysis
    return LastAnalysis(
        version=previous.canary_version or model.spec.version, weight=previous.canary_weight or 0,
        verdict=check.verdict, at=check.at, requests=check.requests, error_rate=check.error_rate,
        p95_latency_ms=check.p95_latency_ms, max_error_rate=analysis.max_error_rate,
        max_p95_latency_ms=analysis.max_p95_latency_ms, min_requests=analysis.min_requests, message=check.message)


def _serving_versions(decision: RolloutDecision) -> set[str | None]:
    """The versions whose readiness is the model's: the stable one, and the canary once it takes (or
    mirrors) traffic."""
    status = decision.status
    serving: set[str | None] = {status.stable_version}
    if status.phase == "Progressing" and status.progress.stage not in (None, "Initializing"):
        serving.add(status.canary_version)
    return serving


def canary_readiness(model: VSSModel, rollout: RolloutStatus, observed: Iterable[Mapping[str, Any]]
                     ) -> Readiness:
    """The canary InferenceService's readiness as the rollout reads it. With `trafficRouter: knative` the
    one InferenceService holds the canary's revision: it counts once KServe has reconciled the canary's
    spec (observedGeneration) and its newest revision is the ready one."""
    canary = rollout.canary_version
    if canary is None:
        return "Pending"
    knative = model.spec.rollout.traffic_router == "knative"
    name = model.metadata.name if knative else f"{model.metadata.name}-{canary}"
    isvc = next((o for o in observed if o.get("kind") == "InferenceService"
                 and o["metadata"]["name"] == name), None)
    state = isvc_state(name, isvc)
    if state.stalled:
        return "Failed"
    if state.ready != "True" or isvc is None:
        return "Pending"
    if knative:
        meta, status = isvc["metadata"], isvc.get("status") or {}
        if (meta.get("labels") or {}).get(VERSION_LABEL) != canary:
            return "Pending"
        if status.get("observedGeneration") != meta.get("generation"):
            return "Pending"
        predictor = (status.get("components") or {}).get("predictor") or {}
        created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
        if created is not None and created != ready:
            return "Pending"
    return "Ready"


def _url(desired: Sequence[Mapping[str, Any]], children: Sequence[ChildState]) -> str | None:
    route = next((d for d in desired if d.get("kind") == "HTTPRoute"), None)
    if route is not None and route["spec"].get("hostnames"):
        return f"http://{route['spec']['hostnames'][0]}"
    return next((c.url for c in children if c.url), None)


def transitions(previous: VSSModelStatus, current: VSSModelStatus) -> list[Event]:
    """Events worth posting: Ready flipped (or first set), or a child made Stalled true."""
    events: list[Event] = []
    old_ready, new_ready = previous.condition(READY), current.condition(READY)
    if new_ready is not None and (old_ready is None or old_ready.status != new_ready.status
                                  or old_ready.reason != new_ready.reason):
        kind: Literal["Normal", "Warning"] = "Normal" if new_ready.status == "True" else "Warning"
        if new_ready.status != "True" and new_ready.reason in (INFERENCE_SERVICE_PENDING, PROGRESSING):
            kind = "Normal"
        events.append(Event(kind, new_ready.reason, new_ready.message))
    old_stalled, new_stalled = previous.condition(STALLED), current.condition(STALLED)
    # A rollback posts its own Event (the rollout's decision), with the same words.
    if new_stalled is not None and new_stalled.status == "True" and new_stalled.reason not in ROLLED_BACK_REASONS and (
            old_stalled is None or old_stalled.status != "True"):
        events.append(Event("Warning", STALLED, new_stalled.message))
    return events
