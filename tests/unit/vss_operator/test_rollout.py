"""The rollout state machine: a table of single decisions, whole rollouts call by call, and properties
that hold for every walk hypothesis can find."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vss_api.vssmodel import VSSModelSpec
from vss_operator.promql import AnalysisError, NoData, Sample, VersionSample
from vss_operator.rollout import (
    ABORTED,
    ANALYSIS_ERROR,
    ANALYSIS_FAILED,
    ANALYSIS_RECOVERED,
    CANARY_FAILED,
    NO_ANALYSIS_DATA,
    PROGRESS_DEADLINE_EXCEEDED,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    Check,
    Observations,
    Position,
    RolloutDecision,
    RolloutProgress,
    RolloutStatus,
    analysis_due,
    decide,
    judge,
    position,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GOOD = VersionSample(requests=120, server_errors=0, client_errors=3, p95_ms=22.0)
ERRORS = VersionSample(requests=120, server_errors=6, client_errors=0, p95_ms=22.0)
SLOW = VersionSample(requests=120, server_errors=0, client_errors=0, p95_ms=240.0)
QUIET = VersionSample(requests=4, server_errors=0, client_errors=0, p95_ms=20.0)
NOTHING = NoData("no requests to version v2 in the last 60000ms")
BROKEN = AnalysisError("Prometheus endpoint 'default' could not be queried (ClientConnectorError)")
READY = Observations(canary="Ready")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_spec(version: str = "v2", **rollout: Any) -> VSSModelSpec:
    block: dict[str, Any] = {
        "steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "2m"}],
        "analysis": {"interval": "1m", "failureLimit": 2, "noDataLimit": 3, "minRequests": 10,
                     "maxErrorRate": 0.01, "maxP95LatencyMs": 80},
        "progressDeadline": "10m",
    }
    block.update(rollout)
    return VSSModelSpec.model_validate({
        "task": "detection", "version": version,
        "versions": [{"name": n, "storageUri": f"s3://models/{n}.onnx"} for n in ("v1", "v2", "v3")],
        "rollout": block,
    })


def stable(version: str = "v1", **progress: Any) -> RolloutStatus:
    return RolloutStatus(phase="Stable", stable_version=version, progress=RolloutProgress(**progress))


def progressing(stage: str = "Canary", step: int | None = 0, *, since: float = 0, weight: int | None = None,
                canary: str = "v2", last: str | None = None, last_at: float | None = None,
                **progress: Any) -> RolloutStatus:
    check = None if last is None else Check(verdict=last, at=at(last_at if last_at is not None else since))
    weights = {0: 10, 1: 50}
    return RolloutStatus(
        phase="Progressing", stable_version="v1", canary_version=canary,
        canary_weight=weight if weight is not None else (weights[step or 0] if stage in (
            "Canary", "AwaitingPromotion") else 0),
        progress=RolloutProgress(
            stage=stage, step=step, started_at=at(0), stage_started_at=at(since), last_check=check,
            last_analysis_at=None if check is None else check.at,
            passed_checks=progress.pop("passed_checks", 1 if last == "Pass" else 0),
            mirror_percent=progress.pop("mirror_percent", 0), **progress))


def rolled_back(canary: str = "v2", **progress: Any) -> RolloutStatus:
    return RolloutStatus(phase="RolledBack", stable_version="v1", canary_version=canary, canary_weight=0,
                         progress=RolloutProgress(reason=ANALYSIS_FAILED, **progress))


# --- the table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    status: RolloutStatus
    now: float
    observations: Observations = field(default_factory=Observations)
    spec: VSSModelSpec = field(default_factory=make_spec)
    # expected afterwards: phase, stage, step, canary weight, stable, canary
    expect: tuple[str, str | None, int | None, int, str | None, str | None] = ("Stable", None, None, 0, "v1",
                                                                               None)
    reason: str | None = None


CASES = [
    Case("a new object serves spec.version as stable without a rollout",
         RolloutStatus(phase="Stable", stable_version=None), 0, spec=make_spec("v2"),
         expect=("Stable", None, None, 0, "v2", None)),
    Case("a stable object whose version did not change stays as it is",
         stable("v2"), 0, spec=make_spec("v2"), expect=("Stable", None, None, 0, "v2", None)),
    Case("a new spec.version starts a rollout with no traffic until the canary is ready",
         stable("v1"), 0, expect=("Progressing", "Initializing", None, 0, "v1", "v2")),
    Case("a ready canary takes the first step's weight",
         progressing("Initializing", None), 30, READY, expect=("Progressing", "Canary", 0, 10, "v1", "v2")),
    Case("a ready canary is mirrored first when a shadow phase is configured",
         progressing("Initializing", None), 30, READY, spec=make_spec(shadow={"percent": 20, "duration": "3m"}),
         expect=("Progressing", "Shadow", None, 0, "v1", "v2")),
    Case("an Immediate rollout promotes as soon as the new version is ready",
         progressing("Initializing", None), 30, READY, spec=make_spec(strategy="Immediate"),
         expect=("Promoted", None, None, 0, "v2", None)),
    Case("a canary still not ready after progressDeadline rolls back",
         progressing("Initializing", None), 600, expect=("RolledBack", None, None, 0, "v1", "v2"),
         reason=PROGRESS_DEADLINE_EXCEEDED),
    Case("a canary not yet ready within progressDeadline keeps waiting",
         progressing("Initializing", None), 599, expect=("Progressing", "Initializing", None, 0, "v1", "v2")),
    Case("a failed canary InferenceService rolls back at once",
         progressing("Canary", 1, since=0), 10, Observations(canary="Failed", sample=GOOD),
         expect=("RolledBack", None, None, 0, "v1", "v2"), reason=CANARY_FAILED),
    Case("a sample before the interval has passed is not judged",
         progressing("Canary", 0, since=0), 59, Observations(canary="Ready", sample=ERRORS),
         expect=("Progressing", "Canary", 0, 10, "v1", "v2")),
    Case("a passing check before the step's pause has passed holds the step",
         progressing("Canary", 0, since=0), 60, Observations(canary="Ready", sample=GOOD),
         expect=("Progressing", "Canary", 0, 10, "v1", "v2")),
    Case("a passing check after the step's pause advances to the next step",
         progressing("Canary", 0, since=0, last="Pass", last_at=60), 120, Observations("Ready", GOOD),
         expect=("Progressing", "Canary", 1, 50, "v1", "v2")),
    Case("the pause alone does not advance a step without a passing check",
         progressing("Canary", 0, since=0), 300, READY, expect=("Progressing", "Canary", 0, 10, "v1", "v2")),
    Case("a step whose last check had no data does not advance",
         progressing("Canary", 0, since=0, last="NoData", last_at=120, passed_checks=1), 150, READY,
         expect=("Progressing", "Canary", 0, 10, "v1", "v2")),
    Case("the last step passing promotes an Automatic rollout",
         progressing("Canary", 1, since=0, last="Pass", last_at=60), 120, Observations("Ready", GOOD),
         expect=("Promoted", None, None, 0, "v2", None)),
    Case("the last step passing waits for the annotation in a Manual rollout",
         progressing("Canary", 1, since=0, last="Pass", last_at=60), 120, Observations("Ready", GOOD),
         spec=make_spec(promotion="Manual"), expect=("Progressing", "AwaitingPromotion", 1, 50, "v1", "v2")),
    Case("a Manual rollout ignores a promote annotation naming another version",
         progressing("AwaitingPromotion", 1, last="Pass", last_at=120), 150,
         Observations("Ready", promote="v1"), spec=make_spec(promotion="Manual"),
         expect=("Progressing", "AwaitingPromotion", 1, 50, "v1", "v2")),
    Case("a Manual rollout promotes when the annotation names the canary",
         progressing("AwaitingPromotion", 1, last="Pass", last_at=120), 150,
         Observations("Ready", promote="v2"), spec=make_spec(promotion="Manual"),
         expect=("Promoted", None, None, 0, "v2", None)),
    Case("a Manual rollout does not promote while its last check failed",
         progressing("AwaitingPromotion", 1, last="Fail", last_at=120, failed_checks=1), 150,
         Observations("Ready", promote="v2"), spec=make_spec(promotion="Manual"),
         expect=("Progressing", "AwaitingPromotion", 1, 50, "v1", "v2")),
    Case("a Manual rollout keeps judging while it waits and rolls back on failures",
         progressing("AwaitingPromotion", 1, since=0, last="Fail", last_at=120, failed_checks=1), 180,
         Observations("Ready", ERRORS, promote="v2"), spec=make_spec(promotion="Manual"),
         expect=("RolledBack", None, None, 0, "v1", "v2"), reason=ANALYSIS_FAILED),
    Case("one failed check under failureLimit holds the step",
         progressing("Canary", 0, since=0), 60, Observations("Ready", ERRORS),
         expect=("Progressing", "Canary", 0, 10, "v1", "v2")),
    Case("the canary rolls back after two failed checks",
         progressing("Canary", 1, since=0, last="Fail", last_at=60, failed_checks=1), 120,
         Observations("Ready", ERRORS), expect=("RolledBack", None, None, 0, "v1", "v2"),
         reason=ANALYSIS_FAILED),
    Case("failures of earlier steps count towards failureLimit",
         progressing("Canary", 1, since=200, failed_checks=1), 260, Observations("Ready", SLOW),
         expect=("RolledBack", None, None, 0, "v1", "v2"), reason=ANALYSIS_FAILED),
    Case("a check without data neither passes nor fails",
         progressing("Canary", 0, since=0, last="Pass", last_at=60), 180, Observations("Ready", NOTHING),
         expect=("Progressing", "Canary", 0, 10, "v1", "v2")),
    Case("checks without data up to noDataLimit roll back",
         progressing("Canary", 0, since=0, last="NoData", last_at=120, no_data_checks=2), 180,
         Observations("Ready", NOTHING), expect=("RolledBack", None, None, 0, "v1", "v2"),
         reason=NO_ANALYSIS_DATA),
    Case("spec.version set back to the stable version aborts at once without analysis",
         progressing("Canary", 1, since=0), 5, Observations("Ready", ERRORS), spec=make_spec("v1"),
         expect=("Stable", None, None, 0, "v1", None), reason=ABORTED),
    Case("a newer version during a rollout restarts from the beginning with the newest",
         progressing("Canary", 1, since=0, last="Pass", last_at=60), 120, Observations("Ready", GOOD),
         spec=make_spec("v3"), expect=("Progressing", "Initializing", None, 0, "v1", "v3")),
    Case("a promoted version becomes stable on the next call",
         RolloutStatus(phase="Promoted", stable_version="v2"), 0, expect=("Stable", None, None, 0, "v2", None)),
    Case("a rolled-back rollout stays rolled back while spec.version names the canary",
         rolled_back(), 3600, Observations("Ready", GOOD), expect=("RolledBack", None, None, 0, "v1", "v2")),
    Case("a rolled-back rollout settles when spec.version is set back in Git",
         rolled_back(), 3600, spec=make_spec("v1"), expect=("Stable", None, None, 0, "v1", None)),
    Case("a rolled-back rollout restarts when a new retry annotation value appears",
         rolled_back(last_retry="1"), 3600, Observations(retry="2"),
         expect=("Progressing", "Initializing", None, 0, "v1", "v2")),
    Case("a rolled-back rollout ignores the retry value it already acted on",
         rolled_back(last_retry="1"), 3600, Observations(retry="1"),
         expect=("RolledBack", None, None, 0, "v1", "v2")),
    Case("a rolled-back rollout starts over when spec.version names a third version",
         rolled_back(), 3600, spec=make_spec("v3"), expect=("Progressing", "Initializing", None, 0, "v1", "v3")),
    Case("a passing shadow phase moves to the first step",
         progressing("Shadow", None, since=0, last="Pass", last_at=180, mirror_percent=20), 180,
         Observations("Ready", GOOD), spec=make_spec(shadow={"percent": 20, "duration": "3m"}),
         expect=("Progressing", "Canary", 0, 10, "v1", "v2")),
    Case("a failing shadow phase rolls back like a canary step",
         progressing("Shadow", None, since=0, last="Fail", last_at=60, failed_checks=1, mirror_percent=20),
         120, Observations("Ready", ERRORS), spec=make_spec(shadow={"percent": 20, "duration": "3m"}),
         expect=("RolledBack", None, None, 0, "v1", "v2"), reason=ANALYSIS_FAILED),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name.replace(" ", "_") for c in CASES])
def test_decision_table(case: Case) -> None:
    decision = decide(case.spec, case.status, case.observations, at(case.now))
    s = decision.status
    got = (s.phase, s.progress.stage, s.progress.step, decision.canary_weight, s.stable_version,
           s.canary_version)
    assert got == case.expect, decision
    if case.reason is not None:
        assert s.progress.reason == case.reason
        assert decision.transition is not None and decision.transition.reason == case.reason


# --- single behaviours worth a name --------------------------------------------------------------------


def test_judge_counts_fewer_requests_than_min_requests_as_no_data() -> None:
    check = judge(make_spec().rollout.analysis, QUIET, T0)
    assert check.verdict == "NoData" and "minRequests" in check.message


def test_judge_fails_a_slow_canary_and_says_by_how_much() -> None:
    check = judge(make_spec().rollout.analysis, SLOW, T0)
    assert check.verdict == "Fail" and "p95 latency 240.0ms above 80ms" in check.message


def test_judge_ignores_client_errors() -> None:
    sample = VersionSample(requests=100, server_errors=0, client_errors=60, p95_ms=10.0)
    assert judge(make_spec().rollout.analysis, sample, T0).verdict == "Pass"


def test_judge_without_latency_but_with_errors_fails_on_the_errors() -> None:
    sample = VersionSample(requests=100, server_errors=100, client_errors=0, p95_ms=None)
    assert judge(make_spec().rollout.analysis, sample, T0).verdict == "Fail"
    quiet_latency = VersionSample(requests=100, server_errors=0, client_errors=0, p95_ms=None)
    assert judge(make_spec().rollout.analysis, quiet_latency, T0).verdict == "NoData"


def test_analysis_is_due_one_interval_after_the_step_began_and_after_each_check() -> None:
    spec = make_spec()
    assert analysis_due(spec, progressing("Canary", 0, since=0), at(59)) is None
    assert analysis_due(spec, progressing("Canary", 0, since=0), at(60)) == "v2"
    assert analysis_due(spec, progressing("Canary", 0, since=0, last="Pass", last_at=100), at(159)) is None
    assert analysis_due(spec, progressing("Initializing", None), at(3600)) is None
    assert analysis_due(spec, stable(), at(3600)) is None


def test_a_failed_check_posts_a_warning_event_naming_the_stable_versions_numbers() -> None:
    observations = Observations("Ready", ERRORS, stable_sample=GOOD)
    decision = decide(make_spec(), progressing("Canary", 0, since=0), observations, at(60))
    assert decision.check is not None and decision.check.verdict == "Fail"
    (event,) = decision.events
    assert event.type == "Warning" and event.reason == "CheckFailed"
    assert "error rate 5.00% above 1.00%" in event.message and "(stable: error rate 0.00%" in event.message
    assert decision.status.progress.failed_checks == 1 and decision.transition is None


def test_a_rollback_is_recorded_in_history_keeps_the_canary_and_stalls() -> None:
    status = progressing("Canary", 1, since=0, last="Fail", last_at=60, failed_checks=1)
    decision = decide(make_spec(), status, Observations("Ready", ERRORS), at(120))
    assert decision.history is not None and decision.history.result == "RolledBack"
    assert decision.canary_version == "v2" and decision.canary_weight == 0
    conditions = {c.type: (c.status, c.reason) for c in decision.conditions()}
    assert conditions == {"Stalled": ("True", ANALYSIS_FAILED), "RolloutSucceeded": ("False", ANALYSIS_FAILED)}
    assert [e.reason for e in decision.events] == ["CheckFailed", ANALYSIS_FAILED]


def test_a_promotion_drops_the_old_stable_and_records_history() -> None:
    status = progressing("Canary", 1, since=0, last="Pass", last_at=60)
    decision = decide(make_spec(), status, Observations("Ready", GOOD), at(120))
    assert (decision.stable_version, decision.canary_version, decision.canary_weight) == ("v2", None, 0)
    assert decision.history is not None and decision.history.version == "v2"
    assert decision.history.result == "Promoted" and decision.requeue_after == 0.0
    after = decide(make_spec(), decision.status, READY, at(121))
    assert [(c.type, c.status) for c in after.conditions()] == [("RolloutSucceeded", "True")]


def test_the_shadow_phase_mirrors_without_traffic() -> None:
    spec = make_spec(shadow={"percent": 25, "duration": "2m"})
    decision = decide(spec, progressing("Initializing", None), READY, at(1))
    assert (decision.canary_weight, decision.mirror_percent) == (0, 25)
    advanced = decide(spec, replace(decision.status, progress=decision.status.progress.model_copy(
        update={"last_check": judge(spec.rollout.analysis, GOOD, at(121)), "passed_checks": 1,
                "last_analysis_at": at(121)})), READY, at(121))
    assert (advanced.canary_weight, advanced.mirror_percent) == (10, 0)


def test_the_promote_annotation_only_counts_with_the_canarys_version_name() -> None:
    spec = make_spec(promotion="Manual")
    status = progressing("AwaitingPromotion", 1, last="Pass", last_at=120)
    waiting = decide(spec, status, Observations("Ready", promote="true"), at(150))
    assert waiting.status.phase == "Progressing"
    assert waiting.status.progress.message is not None and "names 'true'" in waiting.status.progress.message
    annotations = {PROMOTE_ANNOTATION: "v2"}
    assert decide(spec, status, Observations.gates(annotations, canary="Ready"), at(150)).status.phase == (
        "Promoted")


def test_a_retry_value_set_before_the_rollback_does_not_retry_it() -> None:
    spec = make_spec()
    status = progressing("Canary", 1, since=0, last="Fail", last_at=60, failed_checks=1)
    annotations = {RETRY_ANNOTATION: "2026-03-01"}
    back = decide(spec, status, Observations.gates(annotations, canary="Ready", sample=ERRORS), at(120))
    assert back.status.phase == "RolledBack"
    again = decide(spec, back.status, Observations.gates(annotations, canary="Ready"), at(600))
    assert again.status.phase == "RolledBack" and again.transition is None
    retried = decide(spec, back.status, Observations.gates({RETRY_ANNOTATION: "later"}), at(700))
    assert retried.status.phase == "Progressing" and retried.status.progress.last_retry == "later"


def test_a_status_marked_failed_by_someone_else_resumes_from_the_rollout_block() -> None:
    status = progressing("Canary", 1, since=0, last="Pass", last_at=60)
    fields = status.as_status_fields() | {"phase": "Failed"}
    assert RolloutStatus.from_status(fields) == status


def test_an_empty_or_unreadable_status_reads_as_a_new_object() -> None:
    assert RolloutStatus.from_status(None) == RolloutStatus(phase="Stable", stable_version=None)
    garbled = RolloutStatus.from_status({"stableVersion": "v1", "rollout": {"failedChecks": "many"}})
    assert garbled == RolloutStatus(phase="Stable", stable_version="v1")
    no_canary = RolloutStatus.from_status({"phase": "Progressing", "stableVersion": "v1"})
    assert no_canary == RolloutStatus(phase="Stable", stable_version="v1")


def test_decide_refuses_a_naive_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide(make_spec(), stable(), READY, datetime(2026, 1, 1))


# --- whole rollouts, call by call ----------------------------------------------------------------------


def drive(spec: VSSModelSpec, status: RolloutStatus, calls: Sequence[tuple[float, Observations]]
          ) -> list[RolloutDecision]:
    decisions = []
    for seconds, observations in calls:
        decision = decide(spec, status, observations, at(seconds))
        decisions.append(decision)
        status = decision.status
    return decisions


def test_a_healthy_canary_is_promoted_through_every_step() -> None:
    spec = make_spec()
    calls = [(0, Observations()), (20, READY)] + [(20 + 60 * i, Observations("Ready", GOOD)) for i in range(1, 6)]
    decisions = drive(spec, stable("v1"), calls)
    weights = [d.canary_weight for d in decisions]
    assert weights == [0, 10, 10, 50, 50, 0, 0]
    assert [d.status.phase for d in decisions][-2:] == ["Promoted", "Stable"]
    reasons = [d.transition.reason for d in decisions if d.transition is not None]
    assert reasons == ["RolloutStarted", "StepAdvanced", "StepAdvanced", "Promoted", "RolloutCompleted"]


def test_step_and_promotion_events_carry_the_passing_checks_numbers_and_thresholds() -> None:
    spec = make_spec()
    calls = [(0, Observations()), (20, READY)] + [(20 + 60 * i, Observations("Ready", GOOD)) for i in range(1, 6)]
    events = [e for d in drive(spec, stable("v1"), calls) for e in d.events
              if e.reason in ("StepAdvanced", "Promoted")]
    numbers = "(error rate 0.00% <= 1.00%, p95 latency 22.0ms <= 80ms, 120 requests)"
    assert [e.message for e in events] == [
        "v2 is ready: 10% of traffic (step 1 of 2)",
        f"v2 passed step 1 {numbers}: 50% of traffic (step 2 of 2)",
        f"v2 promoted: v2 passed every step {numbers}; v1 will be removed after the scale-down delay (30s)",
    ]


def test_an_erroring_canary_rolls_back_within_failure_limit_intervals() -> None:
    spec = make_spec()
    calls = [(0, Observations()), (20, READY)] + [(20 + 60 * i, Observations("Ready", ERRORS))
                                                  for i in range(1, 4)]
    decisions = drive(spec, stable("v1"), calls)
    phases = [d.status.phase for d in decisions]
    assert phases.index("RolledBack") == 3  # two checks after the first step began
    assert decisions[3].status.progress.failed_checks == 2


def test_a_status_written_and_read_back_decides_the_same() -> None:
    spec = make_spec(shadow={"percent": 10, "duration": "1m"})
    status = stable("v1")
    calls = [(0, Observations()), (20, READY), (80, Observations("Ready", GOOD)), (140, Observations("Ready", GOOD))]
    for seconds, observations in calls:
        restarted = RolloutStatus.from_status(status.as_status_fields())
        assert restarted == status
        assert decide(spec, restarted, observations, at(seconds)) == decide(spec, status, observations, at(seconds))
        status = decide(spec, status, observations, at(seconds)).status


def test_prometheus_down_for_an_hour_pauses_the_rollout_and_never_rolls_back() -> None:
    """Keep outcomes apart (Argo Rollouts): a monitoring outage says nothing about the canary."""
    spec = make_spec()
    calls = [(0, Observations()), (20, READY)] + [(20 + 60 * i, Observations("Ready", BROKEN)) for i in range(1, 61)]
    decisions = drive(spec, stable("v1"), calls)
    after = decisions[2:]
    assert {(d.status.phase, d.status.progress.stage, d.status.progress.step, d.canary_weight) for d in after} == {
        ("Progressing", "Canary", 0, 10)}
    assert {d.check.verdict for d in after if d.check is not None} == {"Error"}
    last = after[-1].status.progress
    assert (last.failed_checks, last.no_data_checks, last.passed_checks) == (0, 0, 0)
    assert last.reason == ANALYSIS_ERROR and "rollout paused" in (last.message or "")
    warnings = [e for d in after for e in d.events if e.reason == ANALYSIS_ERROR]
    assert len(warnings) == 1  # one Event when the outage begins, not one per interval
    assert "ClientConnectorError" in warnings[0].message


def test_the_rollout_goes_on_where_it_paused_once_the_metrics_read_again() -> None:
    spec = make_spec()
    calls = [(0, Observations()), (20, READY), (80, Observations("Ready", BROKEN)),
             (140, Observations("Ready", BROKEN)), (200, Observations("Ready", GOOD))]
    decisions = drive(spec, stable("v1"), calls)
    recovered = decisions[-1]
    assert [e.reason for e in recovered.events][:1] == [ANALYSIS_RECOVERED]
    assert (recovered.status.progress.stage, recovered.status.progress.step, recovered.canary_weight) == (
        "Canary", 1, 50)  # the step's pause had passed: one passing check advances it


def test_an_analysis_error_keeps_the_no_data_count_of_a_quiet_canary() -> None:
    """Only too little traffic counts toward noDataLimit; an error in between neither resets nor adds."""
    spec = make_spec()  # noDataLimit 3
    calls = [(0, Observations()), (20, READY), (80, Observations("Ready", NOTHING)),
             (140, Observations("Ready", BROKEN)), (200, Observations("Ready", NOTHING)),
             (260, Observations("Ready", NOTHING))]
    decisions = drive(spec, stable("v1"), calls)
    assert [d.status.progress.no_data_checks for d in decisions[2:5]] == [1, 1, 2]
    assert decisions[-1].status.phase == "RolledBack"
    assert decisions[-1].status.progress.reason == NO_ANALYSIS_DATA


def test_judge_calls_unreadable_metrics_an_error_not_a_failure() -> None:
    check = judge(make_spec().rollout.analysis, BROKEN, T0)
    assert check.verdict == "Error" and "could not be queried" in check.message


# --- properties ----------------------------------------------------------------------------------------

VERSIONS = ("v1", "v2", "v3")
SAMPLES: dict[str, Sample] = {"good": GOOD, "errors": ERRORS, "slow": SLOW, "quiet": QUIET, "nothing": NOTHING,
                              "broken": BROKEN}
STAGE_ORDER = {None: 0, "Initializing": 0, "Shadow": 1, "Canary": 2, "AwaitingPromotion": 3}


@st.composite
def rollout_specs(draw: st.DrawFn) -> VSSModelSpec:
    weights = sorted(draw(st.sets(st.integers(1, 99), min_size=1, max_size=4)))
    steps = [{"weight": w, "pause": f"{draw(st.integers(0, 180))}s"} for w in weights]
    block: dict[str, Any] = {
        "strategy": draw(st.sampled_from(["Canary", "Canary", "Canary", "Immediate"])),
        "steps": steps,
        "promotion": draw(st.sampled_from(["Automatic", "Manual"])),
        "progressDeadline": f"{draw(st.integers(1, 600))}s",
        "analysis": {"interval": f"{draw(st.integers(1, 120))}s", "failureLimit": draw(st.integers(1, 3)),
                     "noDataLimit": draw(st.integers(1, 4)), "minRequests": 10, "maxErrorRate": 0.01,
                     "maxP95LatencyMs": 80},
    }
    if draw(st.booleans()):
        block["shadow"] = {"percent": draw(st.integers(1, 100)), "duration": f"{draw(st.integers(0, 180))}s"}
    return VSSModelSpec.model_validate({
        "task": "classification", "version": "v2",
        "versions": [{"name": n, "storageUri": f"s3://m/{n}.onnx"} for n in VERSIONS], "rollout": block})


@dataclass(frozen=True)
class Step:
    dt: float
    canary: str
    sample: str | None
    promote: str | None
    retry: str | None
    version: str | None  # a new spec.version from here on


# Weighted towards progress (a ready canary with good numbers), so that walks reach promotion too.
steps_strategy = st.builds(
    Step, dt=st.one_of(st.floats(0, 200), st.sampled_from([30.0, 60.0, 120.0])),
    canary=st.sampled_from(["Ready"] * 20 + ["Pending", "Pending", "Failed"]),
    sample=st.sampled_from([None, None] + ["good"] * 12 + ["errors", "slow", "quiet", "nothing", "broken"]),
    promote=st.sampled_from([None, None, "v1", "v2", "v2", "v3"]), retry=st.sampled_from([None, "a", "b"]),
    version=st.sampled_from([None] * 40 + list(VERSIONS)))


@dataclass
class Walk:
    spec: VSSModelSpec
    visited: list[tuple[VSSModelSpec, RolloutStatus, float]] = field(default_factory=list)


def walk(spec: VSSModelSpec, script: list[Step], check: Any) -> Walk:
    """Run `decide` along the script from a stable v1 with spec.version v2, calling `check` on each call."""
    status = stable("v1")
    now = 0.0
    record = Walk(spec)
    for step in script:
        now += step.dt
        if step.version is not None:
            spec = spec.model_copy(update={"version": step.version})
        observations = Observations(canary=step.canary,  # type: ignore[arg-type]
                                    sample=None if step.sample is None else SAMPLES[step.sample],
                                    promote=step.promote, retry=step.retry)
        decision = decide(spec, status, observations, at(now))
        check(spec, status, observations, decision, now)
        record.visited.append((spec, decision.status, now))
        status = decision.status
    return record


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(rollout_specs(), st.lists(steps_strategy, max_size=60))
def test_the_weight_never_exceeds_the_last_steps(spec: VSSModelSpec, script: list[Step]) -> None:
    last = spec.rollout.steps[-1].weight

    def check(spec: VSSModelSpec, before: RolloutStatus, obs: Observations, d: RolloutDecision,
              now: float) -> None:
        assert 0 <= d.canary_weight <= last
        if d.status.progress.stage not in ("Canary", "AwaitingPromotion"):
            assert d.canary_weight == 0
        assert d.stable_version != d.canary_version

    walk(spec, script, check)


def _allowed(before: Position, after: Position) -> bool:
    """One edge of the state machine."""
    if before == after:
        return True
    if after.phase in ("Stable", "Promoted", "RolledBack"):
        return before.phase != after.phase or before.canary != after.canary
    # after is Progressing
    if after.stage == "Initializing":
        return before.phase != "Progressing" or before.canary != after.canary
    if before.phase != "Progressing" or before.canary != after.canary:
        return False
    if before.stage == after.stage == "Canary":
        return after.step == (before.step or 0) + 1
    return STAGE_ORDER[after.stage] > STAGE_ORDER[before.stage] and (
        after.stage != "Canary" or after.step == 0) and (
        after.stage != "AwaitingPromotion" or before.stage == "Canary")


@PROPERTY_SETTINGS
@given(rollout_specs(), st.lists(steps_strategy, max_size=60))
def test_each_call_makes_at_most_one_transition(spec: VSSModelSpec, script: list[Step]) -> None:
    def check(spec: VSSModelSpec, before: RolloutStatus, obs: Observations, d: RolloutDecision,
              now: float) -> None:
        b, a = position(before), position(d.status)
        assert _allowed(b, a), (b, a)
        assert (d.transition is not None) == (b != a)
        # Besides what the check itself says (failed, no data, metrics unreadable or readable again), one Event
        # at most: the transition's.
        check_events = ("CheckFailed", "CheckNoData", ANALYSIS_ERROR, ANALYSIS_RECOVERED)
        assert sum(e.reason not in check_events for e in d.events) <= 1

    walk(spec, script, check)


@PROPERTY_SETTINGS
@given(rollout_specs(), st.lists(steps_strategy, max_size=60))
def test_no_promotion_without_passing_analysis(spec: VSSModelSpec, script: list[Step]) -> None:
    passes: dict[tuple[str | None, int | None], int] = {}
    last_verdict: list[str | None] = [None]

    def check(spec: VSSModelSpec, before: RolloutStatus, obs: Observations, d: RolloutDecision,
              now: float) -> None:
        b = position(before)
        if d.transition is not None and d.status.progress.stage == "Initializing":
            passes.clear()
            last_verdict[0] = None
        if d.check is not None:
            last_verdict[0] = d.check.verdict
            if d.check.verdict == "Pass":
                passes[(b.stage, b.step)] = passes.get((b.stage, b.step), 0) + 1
        promoted = d.status.phase == "Promoted" and before.phase == "Progressing"
        if promoted and spec.rollout.strategy == "Canary":
            assert last_verdict[0] == "Pass"
            needed: list[tuple[str, int | None]] = [("Canary", i) for i in range(len(spec.rollout.steps))]
            if spec.rollout.shadow is not None:
                needed.append(("Shadow", None))
            assert all(passes.get(k, 0) >= 1 for k in needed), (needed, passes)
            if spec.rollout.promotion == "Manual":
                assert obs.promote == before.canary_version

    walk(spec, script, check)


def _fail_until_rolled_back(spec: VSSModelSpec, status: RolloutStatus, now: float) -> RolloutStatus:
    interval = float(spec.rollout.analysis.interval.rstrip("s"))
    for _ in range(spec.rollout.analysis.failure_limit + 2):
        now += interval
        status = decide(spec, status, Observations("Ready", ERRORS), at(now)).status
        if status.phase == "RolledBack":
            break
    return status


@PROPERTY_SETTINGS
@given(rollout_specs(), st.lists(steps_strategy, max_size=30))
def test_rollback_is_reachable_from_every_state(spec: VSSModelSpec, script: list[Step]) -> None:
    visited = walk(spec, script, lambda *_: None).visited
    for spec_now, status, now in visited:
        if status.phase != "Progressing":
            continue
        reverted = decide(spec_now.model_copy(update={"version": status.stable_version}), status,
                          Observations("Ready", ERRORS), at(now + 1))
        assert reverted.status.phase == "Stable" and reverted.status.stable_version == status.stable_version
        assert reverted.history is not None and reverted.history.result == "RolledBack"
        if spec_now.rollout.strategy == "Canary":
            assert _fail_until_rolled_back(spec_now, status, now).phase == "RolledBack"
        failed = decide(spec_now, status, Observations("Failed"), at(now + 1))
        assert failed.status.phase == "RolledBack" and failed.canary_weight == 0


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the apiserver applies a status patch: null deletes a key."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@PROPERTY_SETTINGS
@given(rollout_specs(), st.lists(steps_strategy, max_size=30))
def test_a_restarted_operator_decides_as_the_one_before(spec: VSSModelSpec, script: list[Step]) -> None:
    """The status as the apiserver stores it after each merge patch is all a new operator needs."""
    stored: list[dict[str, Any]] = [merge_patch({}, stable("v1").as_status_fields())]

    def check(spec: VSSModelSpec, before: RolloutStatus, obs: Observations, d: RolloutDecision,
              now: float) -> None:
        reread = RolloutStatus.from_status(stored[0])
        assert reread == before
        assert decide(spec, reread, obs, at(now)) == d
        stored[0] = merge_patch(stored[0], d.status.as_status_fields())

    walk(spec, script, check)


@PROPERTY_SETTINGS
@given(rollout_specs(), st.lists(steps_strategy, max_size=60))
def test_an_analysis_error_never_moves_a_rollout(spec: VSSModelSpec, script: list[Step]) -> None:
    """A check that could not read the metrics neither rolls back nor advances, whatever came before."""

    def check(spec: VSSModelSpec, before: RolloutStatus, obs: Observations, d: RolloutDecision,
              now: float) -> None:
        if d.check is not None and d.check.verdict == "Error" and d.transition is not None:
            assert d.transition.reason not in (ANALYSIS_FAILED, NO_ANALYSIS_DATA, "StepAdvanced", "Promoted"), d

    walk(spec, script, check)
