"""The canary rollout as a pure state machine: `decide(spec, status, observations, now)` says which versions
serve with which weights, what the status records and which Event to post. Nothing here does I/O.

    Stable ──spec.version changes──▶ Progressing: Initializing (weight 0 until the new version is Ready)
      → [Shadow: mirrored requests only] → Canary step 0 … step n-1 → [AwaitingPromotion, Manual only]
      → Promoted ──next call──▶ Stable
    Progressing ──failed checks ≥ failureLimit, checks without data ≥ noDataLimit, progress deadline,
      the new version's InferenceService failed──▶ RolledBack (weight 0, canary kept, Stalled)
    Progressing ──spec.version set back to the stable version──▶ Stable at once, no analysis
    Progressing ──spec.version names yet another version──▶ Initializing again, with the newest

Everything a decision depends on is in the status it returns (`RolloutStatus`, persisted as the status
fields `phase`, `stableVersion`, `canaryVersion`, `canaryWeight` and the block `rollout`), so an operator
restarted at any point decides exactly as it would have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from vss_api.vssmodel import (
    GROUP,
    RECONCILING,
    ROLLOUT_SUCCEEDED,
    STALLED,
    Analysis,
    ConditionStatus,
    RolloutPhase,
    VSSModelSpec,
    parse_duration,
)
from vss_operator.objects import Event, EventType
from vss_operator.promql import AnalysisError, NoData, Sample

PROMOTE_ANNOTATION = f"{GROUP}/promote"
RETRY_ANNOTATION = f"{GROUP}/retry"

Stage = Literal["Initializing", "Shadow", "Canary", "AwaitingPromotion"]
# Argo Rollouts' outcomes kept apart: Fail counts toward failureLimit, NoData (too little traffic) toward
# noDataLimit; Error (the metrics could not be read) toward neither, and pauses the rollout until a check reads.
Verdict = Literal["Pass", "Fail", "NoData", "Error"]
Readiness = Literal["Ready", "Pending", "Failed"]

# Reasons (CamelCase constants: Event reasons, condition reasons, status.rollout.reason).
INITIALIZED = "Initialized"
ROLLOUT_STARTED = "RolloutStarted"
ROLLOUT_RESTARTED = "RolloutRestarted"
RETRY_STARTED = "RetryStarted"
SHADOW_STARTED = "ShadowStarted"
STEP_ADVANCED = "StepAdvanced"
AWAITING_PROMOTION = "AwaitingPromotion"
PROMOTED = "Promoted"
ROLLOUT_COMPLETED = "RolloutCompleted"
ANALYSIS_FAILED = "AnalysisFailed"
NO_ANALYSIS_DATA = "NoAnalysisData"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
CANARY_FAILED = "CanaryFailed"
ABORTED = "RolloutAborted"
ROLLBACK_ACKNOWLEDGED = "RollbackAcknowledged"
STABLE_VERSION_REMOVED = "StableVersionRemoved"
CHECK_FAILED = "CheckFailed"
CHECK_NO_DATA = "CheckNoData"
ANALYSIS_ERROR = "AnalysisError"
ANALYSIS_RECOVERED = "AnalysisRecovered"
ROLLED_BACK_REASONS = frozenset({ANALYSIS_FAILED, NO_ANALYSIS_DATA, PROGRESS_DEADLINE_EXCEEDED, CANARY_FAILED})


# While waiting for the new InferenceService, look again at least this often (its Ready change also
# arrives as an event on the child, so this is only a floor).
READINESS_POLL_S = 10.0


class _StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Check(_StatusModel):
    """One analysis of the canary over one interval."""

    verdict: Verdict = Field(description=(
        "Pass, Fail (counts toward failureLimit), NoData (too little traffic, counts toward noDataLimit) or "
        "Error (the metrics could not be read: the rollout pauses)."))
    at: datetime = Field(description="When the check ran; it covers the analysis interval before.")
    requests: Annotated[float | None, Field(ge=0, description="Canary requests in the interval.")] = None
    error_rate: Annotated[float | None, Field(ge=0, le=1, description=(
        "Share of the canary's requests that ended in a server error."))] = None
    p95_latency_ms: Annotated[float | None, Field(ge=0, description=(
        "95th percentile of the canary's request duration, milliseconds."))] = None
    message: Annotated[str, Field(max_length=1024, description="The verdict in words, with the thresholds.")] = ""


class RolloutProgress(_StatusModel):
    """`status.rollout`: where the rollout is, in enough detail to resume it after a restart."""

    stage: Stage | None = Field(default=None, description="Where a Progressing rollout is.")
    step: Annotated[int | None, Field(ge=0, le=19, description=(
        "Index into spec.rollout.steps during the Canary and AwaitingPromotion stages."))] = None
    mirror_percent: Annotated[int, Field(ge=0, le=100, description=(
        "Percent of requests mirrored to the canary (shadow stage)."))] = 0
    started_at: datetime | None = Field(default=None, description="When this rollout began.")
    stage_started_at: datetime | None = Field(default=None, description="When the current stage or step began.")
    last_analysis_at: datetime | None = Field(default=None, description="When the canary was last checked.")
    failed_checks: Annotated[int, Field(ge=0, description="Failed checks in this rollout.")] = 0
    no_data_checks: Annotated[int, Field(ge=0, description="Checks without data in a row.")] = 0
    passed_checks: Annotated[int, Field(ge=0, description="Passed checks in the current stage or step.")] = 0
    last_check: Check | None = Field(default=None, description="The last check of the current stage or step.")
    reason: Annotated[str | None, Field(max_length=64, description=(
        "Reason of the last transition (RolledBack: why)."))] = None
    message: Annotated[str | None, Field(max_length=1024, description=(
        "The last transition in words."))] = None
    last_retry: Annotated[str | None, Field(max_length=256, description=(
        f"The {RETRY_ANNOTATION} value already acted on."))] = None


PHASES: tuple[RolloutPhase, ...] = ("Stable", "Progressing", "Promoted", "RolledBack")


@dataclass(frozen=True)
class RolloutStatus:
    """The rollout's part of the VSSModel status: the input of `decide`, and its output."""

    phase: RolloutPhase
    stable_version: str | None
    canary_version: str | None = None
    canary_weight: int = 0
    progress: RolloutProgress = field(default_factory=RolloutProgress)

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> RolloutStatus:
        """Read it back from `status` as the apiserver holds it (camelCase JSON). A phase written by
        someone else (status.py's `Failed`) is inferred again from the rollout block."""
        status = status or {}
        try:
            progress = RolloutProgress.model_validate(status.get("rollout") or {})
        except ValidationError:
            progress = RolloutProgress()
        stable = status.get("stableVersion") or None
        canary = status.get("canaryVersion") or None
        weight = status.get("canaryWeight")
        raw_phase = status.get("phase")
        phase: RolloutPhase
        if raw_phase in PHASES:
            phase = raw_phase
        elif canary is not None and progress.stage is not None:
            phase = "Progressing"
        elif canary is not None:
            phase = "RolledBack"
        else:
            phase = "Stable"
        if phase in ("Progressing", "RolledBack") and canary is None:
            phase = "Stable"  # a rollout without a canary is no rollout: serve the stable version
        if phase in ("Stable", "Promoted"):
            canary = None
        return cls(phase=phase, stable_version=stable, canary_version=canary,
                   canary_weight=weight if isinstance(weight, int) and canary is not None else 0,
                   progress=progress)

    def as_status_fields(self) -> dict[str, Any]:
        """The status fields the rollout owns, as JSON for a merge patch: None removes a field, so what a
        transition clears (the stage after a rollback) does not linger in the stored object."""
        return {
            "phase": self.phase,
            "stableVersion": self.stable_version,
            "canaryVersion": self.canary_version,
            "canaryWeight": self.canary_weight if self.canary_version is not None else None,
            "rollout": self.progress.model_dump(mode="json", by_alias=True, exclude_none=False),
        }


@dataclass(frozen=True)
class Observations:
    """What the handler saw for this call: the canary InferenceService's readiness, the canary's metrics
    over the last interval (None when it did not query: only when `analysis_due` says so), and the
    annotations that gate the rollout."""

    canary: Readiness = "Pending"
    sample: Sample | None = None
    stable_sample: Sample | None = None  # only for messages: how the stable version did meanwhile
    promote: str | None = None
    retry: str | None = None

    @classmethod
    def gates(cls, annotations: Mapping[str, str], **rest: Any) -> Observations:
        return cls(promote=annotations.get(PROMOTE_ANNOTATION), retry=annotations.get(RETRY_ANNOTATION),
                   **rest)


@dataclass(frozen=True)
class Position:
    """Where a rollout is, for transitions: phase, stage and step."""

    phase: RolloutPhase
    stage: Stage | None
    step: int | None
    canary: str | None


@dataclass(frozen=True)
class Transition:
    before: Position
    after: Position
    reason: str
    message: str


@dataclass(frozen=True)
class HistoryRecord:
    """An entry for `status.history`: a rollout that ended."""

    version: str
    result: Literal["Promoted", "RolledBack"]
    at: datetime
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "result": self.result, "at": self.at.isoformat(),
                "message": self.message[:1024]}


@dataclass(frozen=True)
class RolloutCondition:
    type: str
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class RolloutDecision:
    """What to serve and record now. Render with `stable_version`, `canary_version`, `canary_weight` and
    `mirror_percent`; persist `status`; post `events`; append `history`; call again after `requeue_after`
    seconds (None: only when the object or a child changes)."""

    status: RolloutStatus
    transition: Transition | None = None
    check: Check | None = None
    events: tuple[Event, ...] = ()
    history: HistoryRecord | None = None
    requeue_after: float | None = None

    @property
    def stable_version(self) -> str | None:
        return self.status.stable_version

    @property
    def canary_version(self) -> str | None:
        return self.status.canary_version

    @property
    def canary_weight(self) -> int:
        return self.status.canary_weight if self.status.canary_version is not None else 0

    @property
    def mirror_percent(self) -> int:
        return self.status.progress.mirror_percent if self.status.canary_version is not None else 0

    def conditions(self) -> tuple[RolloutCondition, ...]:
        """The conditions the rollout owns: RolloutSucceeded, and Reconciling/Stalled while it runs or
        after it rolled back (status.py merges them with what the children say)."""
        return rollout_conditions(self.status)


def position(status: RolloutStatus) -> Position:
    return Position(status.phase, status.progress.stage, status.progress.step, status.canary_version)


# --- pure helpers --------------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    return parse_duration(text)


def _elapsed(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


def next_analysis_at(spec: VSSModelSpec, status: RolloutStatus) -> datetime | None:
    """When the next check is due: one interval after the stage began or after the last check, whichever
    is later, so that every check's window lies within one stage. None when no analysis runs."""
    progress = status.progress
    if status.phase != "Progressing" or progress.stage in (None, "Initializing"):
        return None
    if progress.stage_started_at is None:
        return None
    base = progress.stage_started_at
    if progress.last_analysis_at is not None and progress.last_analysis_at > base:
        base = progress.last_analysis_at
    return base + timedelta(seconds=_seconds(spec.rollout.analysis.interval))


def analysis_due(spec: VSSModelSpec, status: RolloutStatus, now: datetime) -> str | None:
    """The version the handler should query Prometheus for now, or None."""
    due = next_analysis_at(spec, status)
    return status.canary_version if due is not None and now >= due else None


def judge(analysis: Analysis, sample: Sample, now: datetime) -> Check:
    """One check of the canary against the spec's thresholds. Missing data is neither pass nor fail, and
    metrics that could not be read are an error, which says nothing about the canary."""
    if isinstance(sample, AnalysisError):
        return Check(verdict="Error", at=now, message=sample.reason[:1024])
    if isinstance(sample, NoData):
        return Check(verdict="NoData", at=now, message=sample.reason[:1024])
    measured = {"requests": round(sample.requests, 3), "error_rate": round(sample.error_ratio, 6),
                "p95_latency_ms": None if sample.p95_ms is None else round(sample.p95_ms, 3)}
    if sample.requests < analysis.min_requests:
        return Check(verdict="NoData", at=now, **measured, message=(
            f"{sample.requests:.0f} requests in the interval, fewer than minRequests {analysis.min_requests}"))
    failures = []
    if sample.error_ratio > analysis.max_error_rate:
        failures.append(f"error rate {sample.error_ratio:.2%} above {analysis.max_error_rate:.2%}")
    if sample.p95_ms is not None and sample.p95_ms > analysis.max_p95_latency_ms:
        failures.append(f"p95 latency {sample.p95_ms:.1f}ms above {analysis.max_p95_latency_ms:g}ms")
    if failures:
        return Check(verdict="Fail", at=now, **measured, message="; ".join(failures))
    if sample.p95_ms is None:
        return Check(verdict="NoData", at=now, **measured, message="no request durations observed")
    return Check(verdict="Pass", at=now, **measured, message=(
        f"error rate {sample.error_ratio:.2%} <= {analysis.max_error_rate:.2%}, p95 latency "
        f"{sample.p95_ms:.1f}ms <= {analysis.max_p95_latency_ms:g}ms, {sample.requests:.0f} requests"))


def rollout_conditions(status: RolloutStatus) -> tuple[RolloutCondition, ...]:
    progress = status.progress
    message = progress.message or ""
    if status.phase in ("Progressing", "Promoted"):
        reason = progress.reason or ROLLOUT_STARTED
        return (RolloutCondition(RECONCILING, "True", reason, message),
                RolloutCondition(ROLLOUT_SUCCEEDED, "Unknown", reason, message))
    if status.phase == "RolledBack":
        reason = progress.reason or ANALYSIS_FAILED
        return (RolloutCondition(STALLED, "True", reason, message),
                RolloutCondition(ROLLOUT_SUCCEEDED, "False", reason, message))
    if progress.reason in (None, INITIALIZED):
        return ()
    succeeded: ConditionStatus = "True" if progress.reason in (ROLLOUT_COMPLETED, PROMOTED,
                                                              STABLE_VERSION_REMOVED) else "False"
    return (RolloutCondition(ROLLOUT_SUCCEEDED, succeeded, progress.reason, message),)


# --- the state machine ---------------------------------------------------------------------------------


def decide(spec: VSSModelSpec, status: RolloutStatus, observations: Observations, now: datetime
           ) -> RolloutDecision:
    """The next state of the rollout: at most one transition per call."""
    if now.tzinfo is None:
        raise ValueError("decide needs an aware `now` (datetime.now(UTC))")
    target = spec.version
    known = {v.name for v in spec.versions}
    stable, canary = status.stable_version, status.canary_version
    # The retry annotation counts only when changed while rolled back: remember every other value.
    if status.phase != "RolledBack" and status.progress.last_retry != observations.retry:
        status = replace(status, progress=status.progress.model_copy(
            update={"last_retry": observations.retry}))

    if stable is None:
        return _settle(status, target, INITIALIZED, f"serving {target}", now, history=None, event=None)

    if status.phase == "Stable":
        if target == stable:
            return RolloutDecision(status)
        if stable not in known:
            return _promote_at_once(status, target, now)
        return _start(spec, status, target, now, ROLLOUT_STARTED,
                      f"rolling out {target} (stable: {stable})", history=None)

    if status.phase == "Promoted":
        if target == stable:
            return _settle(status, stable, ROLLOUT_COMPLETED, f"{stable} serves all traffic", now,
                           history=None, event=Event("Normal", ROLLOUT_COMPLETED,
                                                            f"{stable} serves all traffic"))
        return _start(spec, status, target, now, ROLLOUT_STARTED,
                      f"rolling out {target} (stable: {stable})", history=None)

    assert canary is not None, "a Progressing or RolledBack status names its canary"
    if status.phase == "RolledBack":
        if target == stable:
            return _settle(status, stable, ROLLBACK_ACKNOWLEDGED,
                           f"spec.version is {stable} again; {canary} removed", now, history=None,
                           event=Event("Normal", ROLLBACK_ACKNOWLEDGED,
                                              f"spec.version is {stable} again; {canary} removed"))
        if stable not in known:
            return _promote_at_once(status, target, now)
        if target != canary:
            return _start(spec, status, target, now, ROLLOUT_STARTED,
                          f"rolling out {target} (stable: {stable})", history=None)
        retry = observations.retry
        if retry is not None and retry != status.progress.last_retry:
            return _start(spec, status, target, now, RETRY_STARTED,
                          f"retrying {target} ({RETRY_ANNOTATION}={retry})", history=None, retry=retry)
        return RolloutDecision(status)

    # Progressing
    if target == stable:
        message = f"spec.version set back to {stable}: {canary} aborted without analysis"
        return _settle(status, stable, ABORTED, message, now,
                       history=HistoryRecord(canary, "RolledBack", now, message),
                       event=Event("Warning", ABORTED, message))
    if stable not in known:
        return _promote_at_once(status, target, now)
    if target != canary:
        message = f"{canary} superseded by {target}: restarting from the first step"
        return _start(spec, status, target, now, ROLLOUT_RESTARTED, message,
                      history=HistoryRecord(canary, "RolledBack", now, message))
    if observations.canary == "Failed":
        return _roll_back(status, CANARY_FAILED, f"the InferenceService of {canary} failed", now)
    if status.progress.stage in (None, "Initializing"):
        return _initializing(spec, status, observations, now)
    return _analysing(spec, status, observations, now)


def _initializing(spec: VSSModelSpec, status: RolloutStatus, observations: Observations, now: datetime
                  ) -> RolloutDecision:
    canary = status.canary_version
    assert canary is not None
    rollout = spec.rollout
    if observations.canary == "Ready":
        if rollout.strategy == "Immediate":
            return _promote(spec, status, f"{canary} is ready (strategy Immediate)", now)
        if rollout.shadow is not None:
            return _enter(spec, status, "Shadow", None, now, SHADOW_STARTED,
                          f"{canary} is ready: mirroring {rollout.shadow.percent}% of requests to it")
        return _enter(spec, status, "Canary", 0, now, STEP_ADVANCED,
                      f"{canary} is ready: {rollout.steps[0].weight}% of traffic "
                      f"(step 1 of {len(rollout.steps)})")
    deadline = _seconds(rollout.progress_deadline)
    waited = _elapsed(status.progress.stage_started_at, now)
    if waited >= deadline:
        return _roll_back(status, PROGRESS_DEADLINE_EXCEEDED,
                          f"{canary} not ready after {rollout.progress_deadline} (progressDeadline)", now)
    return RolloutDecision(status, requeue_after=min(READINESS_POLL_S, deadline - waited))


def _analysing(spec: VSSModelSpec, status: RolloutStatus, observations: Observations, now: datetime
               ) -> RolloutDecision:
    rollout = spec.rollout
    analysis = rollout.analysis
    canary = status.canary_version
    assert canary is not None
    progress = status.progress
    events: list[Event] = []
    check: Check | None = None
    if observations.sample is not None and analysis_due(spec, status, now) is not None:
        previous_error = progress.last_check is not None and progress.last_check.verdict == "Error"
        check = judge(analysis, observations.sample, now)
        progress = _record(progress, check)
        status = replace(status, progress=progress)
        if check.verdict == "Fail":
            events.append(Event("Warning", CHECK_FAILED, (
                f"{canary} failed a check ({progress.failed_checks} of failureLimit "
                f"{analysis.failure_limit}): {check.message}{_versus(observations.stable_sample)}")))
        elif check.verdict == "NoData":
            events.append(Event("Warning", CHECK_NO_DATA, (
                f"no data to judge {canary} ({progress.no_data_checks} in a row of noDataLimit "
                f"{analysis.no_data_limit}): {check.message}")))
        elif check.verdict == "Error" and not (previous_error and progress.message == _paused(check)):
            events.append(Event("Warning", ANALYSIS_ERROR, _paused(check)))
        if check.verdict == "Error":
            status = replace(status, progress=progress.model_copy(
                update={"reason": ANALYSIS_ERROR, "message": _paused(check)}))
            progress = status.progress
        elif previous_error:
            message = f"the analysis of {canary} reads its metrics again: {check.message}"
            events.append(Event("Normal", ANALYSIS_RECOVERED, message))
            status = replace(status, progress=progress.model_copy(
                update={"reason": ANALYSIS_RECOVERED, "message": message}))
            progress = status.progress
        if progress.failed_checks >= analysis.failure_limit:
            return _with_check(_roll_back(status, ANALYSIS_FAILED, (
                f"{canary} failed {progress.failed_checks} checks (failureLimit {analysis.failure_limit}), "
                f"last: {check.message}"), now), check, events)
        if progress.no_data_checks >= analysis.no_data_limit:
            return _with_check(_roll_back(status, NO_ANALYSIS_DATA, (
                f"no data to judge {canary} in {progress.no_data_checks} checks in a row "
                f"(noDataLimit {analysis.no_data_limit}), last: {check.message}"), now), check, events)

    passed = progress.last_check is not None and progress.last_check.verdict == "Pass"
    if progress.stage == "AwaitingPromotion":
        if passed and observations.promote == canary:
            return _with_check(_promote(spec, status, f"{PROMOTE_ANNOTATION}={canary}", now), check, events)
        waiting = f"waiting for the annotation {PROMOTE_ANNOTATION}: {canary}"
        if observations.promote is not None and observations.promote != canary:
            waiting += f" ({PROMOTE_ANNOTATION} names {observations.promote!r})"
        elif observations.promote == canary:
            waiting = f"{PROMOTE_ANNOTATION}={canary} set: waiting for the next passing check"
        if progress.message != waiting:
            status = replace(status, progress=progress.model_copy(update={"message": waiting}))
        return RolloutDecision(status, check=check, events=tuple(events),
                               requeue_after=_until_next(spec, status, now))

    pause = (_seconds(rollout.shadow.duration) if progress.stage == "Shadow" and rollout.shadow
             else _seconds(rollout.steps[progress.step or 0].pause))
    paused_enough = _elapsed(progress.stage_started_at, now) >= pause
    if paused_enough and passed and progress.passed_checks >= 1:
        return _with_check(_advance(spec, status, now), check, events)
    requeue = _until_next(spec, status, now)
    if not paused_enough and progress.stage_started_at is not None:
        pause_end = (progress.stage_started_at + timedelta(seconds=pause) - now).total_seconds()
        requeue = min(requeue, max(0.0, pause_end)) if requeue is not None else max(0.0, pause_end)
    return RolloutDecision(status, check=check, events=tuple(events), requeue_after=requeue)


def _advance(spec: VSSModelSpec, status: RolloutStatus, now: datetime) -> RolloutDecision:
    rollout = spec.rollout
    canary = status.canary_version
    progress = status.progress
    steps = rollout.steps
    # The passing check's numbers go into the message, so the Event and the condition show them.
    numbers = f" ({progress.last_check.message})" if progress.last_check is not None else ""
    if progress.stage == "Shadow":
        return _enter(spec, status, "Canary", 0, now, STEP_ADVANCED,
                      f"shadow of {canary} passed{numbers}: {steps[0].weight}% of traffic (step 1 of {len(steps)})")
    step = progress.step or 0
    if step + 1 < len(steps):
        return _enter(spec, status, "Canary", step + 1, now, STEP_ADVANCED,
                      f"{canary} passed step {step + 1}{numbers}: {steps[step + 1].weight}% of traffic "
                      f"(step {step + 2} of {len(steps)})")
    if rollout.promotion == "Manual":
        return _enter(spec, status, "AwaitingPromotion", step, now, AWAITING_PROMOTION,
                      f"{canary} passed every step{numbers}: waiting for the annotation "
                      f"{PROMOTE_ANNOTATION}: {canary}", keep_checks=True)
    return _promote(spec, status, f"{canary} passed every step{numbers}", now)


def _record(progress: RolloutProgress, check: Check) -> RolloutProgress:
    update: dict[str, Any] = {"last_check": check, "last_analysis_at": check.at}
    if check.verdict == "Pass":
        update |= {"passed_checks": progress.passed_checks + 1, "no_data_checks": 0}
    elif check.verdict == "Fail":
        update |= {"failed_checks": progress.failed_checks + 1, "no_data_checks": 0}
    elif check.verdict == "NoData":
        update |= {"no_data_checks": progress.no_data_checks + 1}
    return progress.model_copy(update=update)


def _paused(check: Check) -> str:
    return (f"rollout paused, neither promoted nor rolled back, until the analysis can read the canary's "
            f"metrics: {check.message}")


def _versus(stable: Sample | None) -> str:
    if stable is None or isinstance(stable, NoData | AnalysisError):
        return ""
    latency = "" if stable.p95_ms is None else f", p95 {stable.p95_ms:.1f}ms"
    return f" (stable: error rate {stable.error_ratio:.2%}{latency})"


def _until_next(spec: VSSModelSpec, status: RolloutStatus, now: datetime) -> float | None:
    due = next_analysis_at(spec, status)
    return None if due is None else max(0.0, (due - now).total_seconds())


def _with_check(decision: RolloutDecision, check: Check | None, events: list[Event]
                ) -> RolloutDecision:
    return replace(decision, check=check, events=(*events, *decision.events))


def _transition(before: RolloutStatus, after: RolloutStatus, reason: str, message: str) -> Transition:
    return Transition(position(before), position(after), reason, message)


def _settle(status: RolloutStatus, stable: str, reason: str, message: str, now: datetime, *,
            history: HistoryRecord | None, event: Event | None) -> RolloutDecision:
    """Stable on `stable`, no canary."""
    after = RolloutStatus(phase="Stable", stable_version=stable, progress=RolloutProgress(
        reason=reason, message=message, last_retry=status.progress.last_retry))
    return RolloutDecision(after, _transition(status, after, reason, message),
                           events=(event,) if event else (), history=history)


def _start(spec: VSSModelSpec, status: RolloutStatus, target: str, now: datetime, reason: str, message: str,
           *, history: HistoryRecord | None, retry: str | None = None) -> RolloutDecision:
    """Progressing, Initializing: the new version's InferenceService is created with no traffic."""
    after = RolloutStatus(
        phase="Progressing", stable_version=status.stable_version, canary_version=target, canary_weight=0,
        progress=RolloutProgress(stage="Initializing", started_at=now, stage_started_at=now, reason=reason,
                                 message=message,
                                 last_retry=retry if retry is not None else status.progress.last_retry))
    kind: EventType = "Warning" if reason == ROLLOUT_RESTARTED else "Normal"
    return RolloutDecision(after, _transition(status, after, reason, message),
                           events=(Event(kind, reason, message),), history=history,
                           requeue_after=min(READINESS_POLL_S, _seconds(spec.rollout.progress_deadline)))


def _enter(spec: VSSModelSpec, status: RolloutStatus, stage: Stage, step: int | None, now: datetime,
           reason: str, message: str, *, keep_checks: bool = False) -> RolloutDecision:
    """The next stage or step of a Progressing rollout; the failed-check count spans the whole rollout."""
    rollout = spec.rollout
    weight = 0 if stage == "Shadow" else rollout.steps[step or 0].weight
    progress = status.progress.model_copy(update={
        "stage": stage, "step": step, "stage_started_at": now, "reason": reason, "message": message,
        "mirror_percent": rollout.shadow.percent if stage == "Shadow" and rollout.shadow else 0,
        **({} if keep_checks else {"passed_checks": 0, "last_check": None}),
    })
    after = replace(status, canary_weight=weight, progress=progress)
    decision = RolloutDecision(after, _transition(status, after, reason, message),
                               events=(Event("Normal", reason, message),))
    return replace(decision, requeue_after=_until_next(spec, after, now))


def _promote(spec: VSSModelSpec, status: RolloutStatus, why: str, now: datetime) -> RolloutDecision:
    canary = status.canary_version
    assert canary is not None
    delay = spec.rollout.scale_down_delay
    when = "" if parse_duration(delay) == 0 else f" after the scale-down delay ({delay})"
    message = f"{canary} promoted: {why}; {status.stable_version} will be removed{when}"
    after = RolloutStatus(phase="Promoted", stable_version=canary, progress=RolloutProgress(
        reason=PROMOTED, message=message, started_at=status.progress.started_at,
        last_retry=status.progress.last_retry))
    return RolloutDecision(after, _transition(status, after, PROMOTED, message),
                           events=(Event("Normal", PROMOTED, message),),
                           history=HistoryRecord(canary, "Promoted", now, message), requeue_after=0.0)


def _promote_at_once(status: RolloutStatus, target: str, now: datetime) -> RolloutDecision:
    """The stable version left spec.versions: nothing else can serve, so the target does at once."""
    message = (f"stable version {status.stable_version} is no longer in spec.versions: "
               f"{target} serves all traffic without analysis")
    after = RolloutStatus(phase="Promoted", stable_version=target, progress=RolloutProgress(
        reason=STABLE_VERSION_REMOVED, message=message, last_retry=status.progress.last_retry))
    history = HistoryRecord(target, "Promoted", now, message)
    if status.canary_version is not None and status.canary_version != target:
        history = HistoryRecord(status.canary_version, "RolledBack", now, message)
    return RolloutDecision(after, _transition(status, after, STABLE_VERSION_REMOVED, message),
                           events=(Event("Warning", STABLE_VERSION_REMOVED, message),),
                           history=history, requeue_after=0.0)


def _roll_back(status: RolloutStatus, reason: str, message: str, now: datetime) -> RolloutDecision:
    """All traffic back to the stable version; the canary's InferenceService stays for inspection."""
    canary = status.canary_version
    assert canary is not None
    text = f"{canary} rolled back: {message}"
    after = replace(status, phase="RolledBack", canary_weight=0, progress=status.progress.model_copy(update={
        "stage": None, "step": None, "mirror_percent": 0, "reason": reason, "message": text[:1024]}))
    return RolloutDecision(after, _transition(status, after, reason, text),
                           events=(Event("Warning", reason, text),),
                           history=HistoryRecord(canary, "RolledBack", now, text))
