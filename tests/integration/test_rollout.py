"""Canary rollouts end to end: the operator on the real apiserver, judging REAL predictor processes of two
versions through a REAL Prometheus that scrapes them, while a traffic loop sends requests the way the
HTTPRoute the operator writes splits them. No KServe controller runs, so the tests mark a version's
InferenceService Ready as KServe would. Intervals are shortened through the spec (interval 3s, pauses 2s,
Prometheus scraping every second), never by patching code: a 3s window holds two scrapes even when one is
late on a loaded machine, where a 2s one sometimes holds one (increase() then has nothing: no data).

Each test prints the rollout's Event timeline (times from the `spec.version` change); with
VSS_ROLLOUT_TIMELINES=FILE they are also appended to FILE (docs/gitops.md quotes two of them).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.prometheus_server import PrometheusServer
from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorFactory,
    OperatorProcess,
    operator_factory_fixture,
)
from tests.integration.rollout_fixtures import (  # noqa: F401 - the fixtures
    DEADLINE,
    FAILURE_LIMIT,
    INTERVAL_S,
    SIDE,
    Rollout,
    RolloutFactory,
    history,
    is_subsequence,
    model_files_fixture,
    operator_with_prometheus_fixture,
    prometheus_fixture,
    prometheus_flag,
    rollout_fixture,
    stamp,
    traffic,
)
from tests.support.apiserver import LocalCluster, wait_until

# A check runs at most a timer's slack after it is due, reads Prometheus (up to one scrape behind), and the
# decision is written: on a loaded 2-core machine that takes well under two seconds.
ROLLBACK_SLACK_S = 2.0


# --- the tests -----------------------------------------------------------------------------------------------


def test_a_healthy_canary_is_shadowed_then_promoted_through_every_step(
    rollout: RolloutFactory, k8s_cluster: LocalCluster, operator: OperatorProcess,
) -> None:
    setup = rollout("healthy", "healthy", shadow={"percent": 50, "duration": "2s"})

    with traffic(setup, k8s_cluster) as loop:
        setup.start()
        final = setup.wait_status(lambda s: s.get("phase") == "Stable" and s.get("stableVersion") == "v2",
                                  "v2 promoted and stable")
        wall = time.time() - setup.started_at
        # The status is written before the route is applied: the gateway follows it a moment later.
        wait_until(lambda: 100 in loop.weights_seen("v2"), timeout=DEADLINE, what="the route at 100% v2")
    setup.timeline("A healthy canary, promoted", wall, "RolloutCompleted")

    assert history(final) == [("v2", "Promoted")]
    assert "canaryVersion" not in final and "canaryWeight" not in final
    assert (setup.condition("RolloutSucceeded") or {}).get("status") == "True"
    assert (setup.condition("Ready") or {}).get("status") == "True"
    wait_until(lambda: setup.get("inferenceservice", "healthy-v1") is None, timeout=DEADLINE,
               what="v1's InferenceService deleted after the promotion")
    # The traffic followed the route through every step: mirrored, 25%, 50%, then all on v2.
    assert is_subsequence([0, 25, 50, 100], loop.weights_seen("v2")), loop.splits
    assert loop.mirrored[("v2", 200)] > 0 and loop.sent[("v2", 200)] > 0
    assert not [k for k in loop.sent if k[1] != 200], loop.sent
    assert is_subsequence(["RolloutStarted", "ShadowStarted", "StepAdvanced", "StepAdvanced", "Promoted",
                           "RolloutCompleted"], setup.rollout_reasons())
    assert wall < DEADLINE
    _describe_tells_the_story(k8s_cluster, setup)


def _describe_tells_the_story(k8s_cluster: LocalCluster, setup: Rollout) -> None:
    """`kubectl describe vssm` after a promotion shows the last analysis with its numbers and thresholds, the
    rollout history with why each ended, and Events whose messages carry the numbers."""
    described = k8s_cluster.kubectl("describe", "vssm", setup.name, "-n", setup.namespace).stdout
    print(described)
    if target := os.environ.get("VSS_DESCRIBE_SAMPLE"):
        Path(target).write_text(described)
    words = " ".join(described.split())
    model = setup.get() or {}
    last, limits = model["status"]["lastAnalysis"], model["spec"]["rollout"]["analysis"]
    for shown in ("Last Analysis:", f"Error Rate: {last['errorRate']:g}", f"Requests: {last['requests']:g}",
                  # kubectl describe spells out camelCase names, except those with a digit.
                  f"p95LatencyMs: {last['p95LatencyMs']:g}", f"Max Error Rate: {limits['maxErrorRate']:g}",
                  f"maxP95LatencyMs: {limits['maxP95LatencyMs']:g}", f"Min Requests: {limits['minRequests']}",
                  "Verdict: Pass", "Version: v2", "History:", "Reason: Promoted", "Result: Promoted",
                  "Stable Version: v1", "Started At:"):
        assert shown in words, f"kubectl describe does not show {shown!r}:\n{described}"
    events = " ".join(described.split("Events:", 1)[1].split())
    numbers = (rf"\(error rate [0-9.]+% <= {limits['maxErrorRate']:.2%}, p95 latency [0-9.]+ms <= "
               rf"{limits['maxP95LatencyMs']:g}ms, [0-9]+ requests\)")
    assert re.search(rf"StepAdvanced .*v2 passed step 1 {numbers}", events), events
    assert re.search(r"Promoted .*v2 passed every step \(error rate", events), events


@pytest.mark.parametrize("fault", ["erroring", "slow"])
def test_a_faulty_canary_is_rolled_back_within_failure_limit_intervals(
    rollout: RolloutFactory, k8s_cluster: LocalCluster, operator: OperatorProcess, fault: str,
) -> None:
    # The erroring canary fails every fourth request (a frame size it refuses); the slow one answers every
    # request, in about 90 ms against a 40 ms limit.
    analysis = {"maxP95LatencyMs": 40} if fault == "slow" else {}
    setup = rollout(fault, fault, analysis=analysis)

    with traffic(setup, k8s_cluster, sides=(SIDE, SIDE, SIDE, SIDE + 32) if fault == "erroring" else (SIDE,)):
        setup.start()
        final = setup.wait_status(lambda s: s.get("phase") == "RolledBack", "the rollback")
        wall = time.time() - setup.started_at
    setup.timeline(f"A{'n' if fault == 'erroring' else ''} {fault} canary, rolled back", wall, "AnalysisFailed")

    took_traffic = stamp(final["rollout"]["stageStartedAt"])  # the first step, kept by the rollback
    rolled_back = stamp(final["history"][-1]["at"])
    assert rolled_back - took_traffic <= FAILURE_LIMIT * INTERVAL_S + ROLLBACK_SLACK_S
    assert history(final) == [("v2", "RolledBack")]
    assert (final["stableVersion"], final["canaryVersion"], final["canaryWeight"]) == ("v1", "v2", 0)
    assert final["rollout"]["failedChecks"] == FAILURE_LIMIT
    assert ("error rate" if fault == "erroring" else "p95 latency") in final["rollout"]["lastCheck"]["message"]
    stalled = setup.condition("Stalled") or {}
    assert (stalled.get("status"), stalled.get("reason")) == ("True", "AnalysisFailed")
    assert (setup.condition("Ready") or {}).get("status") == "True"  # v1 serves everything
    assert setup.get("inferenceservice", f"{fault}-v2") is not None, "the canary is kept for inspection"
    route = setup.get("httproute")
    assert route is not None
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]
    assert setup.rollout_reasons() == ["RolloutStarted", "StepAdvanced", "CheckFailed", "CheckFailed",
                                       "AnalysisFailed"]


def test_an_operator_killed_mid_rollout_resumes_from_the_status_and_finishes(
    rollout: RolloutFactory, k8s_cluster: LocalCluster, operator_factory: OperatorFactory,
    prometheus: PrometheusServer,
) -> None:
    first = operator_factory(*prometheus_flag(prometheus))
    first.wait_leading()
    setup = rollout("resumed", "healthy", steps=[{"weight": 25, "pause": "4s"}, {"weight": 50, "pause": "2s"}])

    with traffic(setup, k8s_cluster) as loop:
        setup.start()
        during = setup.wait_status(lambda s: (s.get("rollout") or {}).get("stage") == "Canary",
                                   "the first canary step")
        # In the middle of the step, not of the transition into it: the route is applied and its Event
        # posted (a crash between the status write and those loses the Event; the status keeps the facts).
        wait_until(lambda: 25 in loop.weights_seen("v2") and "StepAdvanced" in setup.rollout_reasons(),
                   timeout=DEADLINE, what="the gateway at 25% and the StepAdvanced Event")
        killed_at = time.time()
        first.stop(signal.SIGKILL)  # no clean shutdown: the Lease is not released, nothing is flushed
        second = operator_factory(*prometheus_flag(prometheus))
        second.wait_leading()
        leading_at = time.time()
        final = setup.wait_status(lambda s: s.get("phase") == "Stable" and s.get("stableVersion") == "v2",
                                  "the new leader to finish the rollout")
        wall = time.time() - setup.started_at
        wait_until(lambda: 100 in loop.weights_seen("v2"), timeout=DEADLINE, what="the route at 100% v2")
    setup.timeline("An operator killed mid-rollout, resumed by the next leader", wall, "RolloutCompleted",
                   {"operator killed (SIGKILL)": killed_at,
                    "a new operator leads (after the Lease expired)": leading_at})

    assert during["rollout"]["step"] == 0
    assert history(final) == [("v2", "Promoted")]  # one rollout, not restarted from the beginning
    reasons = setup.rollout_reasons()
    assert reasons.count("RolloutStarted") == 1 and reasons.count("StepAdvanced") == 2, reasons
    assert is_subsequence([25, 50, 100], loop.weights_seen("v2")), loop.splits
    assert "reconciled generation" in second.log()


def test_a_manual_rollout_waits_for_the_promote_annotation_naming_the_canary(
    rollout: RolloutFactory, k8s_cluster: LocalCluster, operator: OperatorProcess,
) -> None:
    setup = rollout("manual", "healthy", steps=[{"weight": 50, "pause": "2s"}], promotion="Manual")

    with traffic(setup, k8s_cluster):
        setup.start()
        waiting = setup.wait_status(lambda s: (s.get("rollout") or {}).get("stage") == "AwaitingPromotion",
                                    "the manual gate")
        # A value that does not name the canary never promotes it: two more checks pass, it still waits.
        setup.annotate("serving.vss.ai/promote", "true")
        gate_at = stamp(waiting["rollout"]["lastAnalysisAt"])
        still = setup.wait_status(
            lambda s: stamp(s["rollout"]["lastAnalysisAt"]) > gate_at and "names 'true'" in s["rollout"]["message"],
            "a check after the wrong annotation")
        assert (still["phase"], still["canaryWeight"]) == ("Progressing", 50)
        assert still["rollout"]["lastCheck"]["verdict"] == "Pass"

        setup.annotate("serving.vss.ai/promote", "v2")
        final = setup.wait_status(lambda s: s.get("phase") == "Stable" and s.get("stableVersion") == "v2",
                                  "the promotion after the annotation")
        wall = time.time() - setup.started_at
    setup.timeline("A Manual rollout, promoted by the annotation", wall, "RolloutCompleted")

    assert history(final) == [("v2", "Promoted")]
    assert is_subsequence(["StepAdvanced", "AwaitingPromotion", "Promoted", "RolloutCompleted"],
                          setup.rollout_reasons())


def test_a_rolled_back_canary_is_retried_by_the_retry_annotation_alone_and_then_promoted(
    rollout: RolloutFactory, k8s_cluster: LocalCluster, operator: OperatorProcess,
) -> None:
    """No spec edit: only `serving.vss.ai/retry` changes, which kopf saw no more than its own bookkeeping while
    that lived under the same prefix. The canary erred on one frame size, which the clients then stop sending."""
    setup = rollout("retried", "erroring")
    with traffic(setup, k8s_cluster, sides=(SIDE, SIDE, SIDE, SIDE + 32)):
        setup.start()
        rolled_back = setup.wait_status(lambda s: s.get("phase") == "RolledBack", "the rollback")
    assert history(rolled_back) == [("v2", "RolledBack")]
    annotations = (setup.get() or {})["metadata"].get("annotations") or {}
    assert not any(k.startswith("serving.vss.ai/") for k in annotations), annotations  # kopf keeps its own

    with traffic(setup, k8s_cluster) as loop:
        setup.annotate("serving.vss.ai/retry", "1")
        final = setup.wait_status(lambda s: s.get("phase") == "Stable" and s.get("stableVersion") == "v2",
                                  "the retried canary promoted")
        wait_until(lambda: 100 in loop.weights_seen("v2"), timeout=DEADLINE, what="the route at 100% v2")
    assert history(final) == [("v2", "RolledBack"), ("v2", "Promoted")]
    assert final["rollout"]["lastRetry"] == "1"
    assert is_subsequence(["AnalysisFailed", "RetryStarted", "StepAdvanced", "Promoted"], setup.rollout_reasons())
