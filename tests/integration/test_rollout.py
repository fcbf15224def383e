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

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import prometheus_server
from tests.e2e.predictor_process import Predictor, start_predictor, stop
from tests.e2e.prometheus_server import PrometheusServer
from tests.fixtures.faulty_graphs import picky_detector
from tests.fixtures.onnx_graphs import colour_cell_detector, save
from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorFactory,
    OperatorProcess,
    operator_factory_fixture,
)
from tests.integration.rollout_traffic import TrafficLoop
from tests.support.apiserver import ClusterError, LocalCluster, wait_until
from vss_api.vssmodel import VSSModelSpec

SIDE = 64  # the frame size every version accepts; the erroring canary refuses every other size
INTERVAL_S = 3.0
FAILURE_LIMIT = 2
# A check runs at most a timer's slack after it is due, reads Prometheus (up to one scrape behind), and the
# decision is written: on a loaded 2-core machine that takes well under two seconds.
ROLLBACK_SLACK_S = 2.0
DEADLINE = 60.0
ROLLOUT_REASONS = {"RolloutStarted", "ShadowStarted", "StepAdvanced", "AwaitingPromotion", "Promoted",
                   "RolloutCompleted", "CheckFailed", "CheckNoData", "AnalysisFailed", "NoAnalysisData",
                   "ProgressDeadlineExceeded", "CanaryFailed", "RolloutAborted"}


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with prometheus_server.prometheus_server(tmp_path_factory.mktemp("rollout-prometheus")) as server:
        yield server


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ONNX files of the versions: a stable one, a healthy canary, one that fails on every frame size but
    SIDE (a server error per such request) and one that answers right but slowly."""
    workdir = tmp_path_factory.mktemp("rollout-models")
    return {
        "stable": save(colour_cell_detector("yolov8"), workdir / "stable.onnx"),
        "healthy": save(colour_cell_detector("yolov8"), workdir / "healthy.onnx"),
        "erroring": save(picky_detector(SIDE), workdir / "erroring.onnx"),
        "slow": save(picky_detector(SIDE, matmuls=16, matmul_size=512), workdir / "slow.onnx"),
    }


ENDPOINT = "rollout-test"  # the name the VSSModels use; only the operator's flag says where it is


def prometheus_flag(prometheus: PrometheusServer) -> tuple[str, str]:
    return "--prometheus", f"{ENDPOINT}={prometheus.url}"


@pytest.fixture(name="operator")
def operator_fixture(operator_factory: OperatorFactory, prometheus: PrometheusServer) -> OperatorProcess:
    """One operator, leading, for the test namespace, configured with the test Prometheus."""
    op = operator_factory(*prometheus_flag(prometheus))
    op.wait_leading()
    return op


def model_doc(name: str, namespace: str, files: tuple[Path, Path], **rollout: Any) -> dict[str, Any]:
    analysis: dict[str, Any] = {
        # Latency is judged only in the slow canary's test: elsewhere a loaded machine must not fail a check.
        "interval": f"{INTERVAL_S:g}s", "failureLimit": FAILURE_LIMIT, "noDataLimit": 3, "minRequests": 3,
        "maxErrorRate": 0.05, "maxP95LatencyMs": 5000,
        "prometheus": {"endpoint": ENDPOINT, "timeout": "2s"},
        **rollout.pop("analysis", {}),
    }
    return {
        "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "task": "detection", "version": "v1",
            "versions": [{"name": "v1", "storageUri": str(files[0])}, {"name": "v2", "storageUri": str(files[1])}],
            "predictor": {"threads": 1, "batching": {"maxBatchSize": 4, "maxLatencyMs": 0}},
            "transformer": {"detection": {"inputSize": SIDE, "rectangular": False}},
            "rollout": {"steps": [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}],
                        "analysis": analysis, "progressDeadline": "60s", **rollout},
        },
    }


@dataclass
class Rollout:
    """One VSSModel whose v1 serves, with a predictor process per version scraped by Prometheus."""

    cluster: LocalCluster
    namespace: str
    name: str
    predictors: dict[str, Predictor]
    started_at: float = 0.0  # wall time of the spec.version change

    def get(self, kind: str = "vssm", name: str | None = None) -> dict[str, Any] | None:
        found = self.cluster.kubectl("get", kind, name or self.name, "-n", self.namespace, "-o", "json",
                                     check=False)
        return json.loads(found.stdout) if found.returncode == 0 else None

    def status(self) -> dict[str, Any]:
        return (self.get() or {}).get("status") or {}

    def wait_status(self, test: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = DEADLINE) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.status()
            return status if status and test(status) else None

        try:
            return wait_until(probe, timeout=timeout, what=what)
        except ClusterError as exc:  # say where the rollout got stuck
            events = "\n".join(f"  {e['type']} {e['reason']}: {e['message']}" for e in self.events())
            raise AssertionError(f"{exc}\nstatus: {json.dumps(self.status(), indent=1)}\nevents:\n{events}") from exc

    def condition(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status().get("conditions") or [] if c["type"] == type_), None)

    def set_ready(self, version: str) -> None:
        """Write the InferenceService's status as KServe's controller does once its pods are ready."""
        isvc = f"{self.name}-{version}"
        wait_until(lambda: self.get("inferenceservice", isvc), timeout=DEADLINE, what=isvc)
        ready = {"status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        status = {"observedGeneration": 1, "url": f"http://{isvc}.{self.namespace}.example.com",
                  "conditions": [{**ready, "type": "PredictorReady"}, {**ready, "type": "Ready"}]}
        self.cluster.kubectl("patch", "inferenceservice", isvc, "-n", self.namespace, "--subresource=status",
                             "--type=merge", "-p", json.dumps({"status": status}))

    def start(self) -> None:
        """The GitOps commit: spec.version v1 → v2; then KServe brings v2 up."""
        self.started_at = time.time()
        self.cluster.kubectl("patch", "vssm", self.name, "-n", self.namespace, "--type=merge", "-p",
                             json.dumps({"spec": {"version": "v2"}}))
        self.set_ready("v2")

    def annotate(self, key: str, value: str) -> None:
        self.cluster.kubectl("annotate", "vssm", self.name, "-n", self.namespace, "--overwrite", f"{key}={value}")

    def events(self) -> list[dict[str, Any]]:
        found = self.cluster.kubectl("get", "events", "-n", self.namespace, "--field-selector",
                                     f"involvedObject.kind=VSSModel,involvedObject.name={self.name}", "-o", "json")
        items: list[dict[str, Any]] = json.loads(found.stdout)["items"]
        return sorted(items, key=event_time)

    def rollout_reasons(self) -> list[str]:
        return [e["reason"] for e in self.events() if e["reason"] in ROLLOUT_REASONS]

    def timeline(self, title: str, wall_s: float, last: str, marks: dict[str, float] | None = None) -> str:
        """The Events of this VSSModel, once the one with reason `last` is there (the status is written
        before the Events of a transition are posted), with what the test did (`marks`) in between."""
        events = wait_until(lambda: (found := self.events()) and any(e["reason"] == last for e in found) and found,
                            timeout=DEADLINE, what=f"the Event {last}")
        rows = [(event_time(e), f"{e['type']:<8} {e['reason']:<23} {e['message']}") for e in events]
        rows += [(at, f"{'(test)':<8} {what}") for what, at in (marks or {}).items()]
        lines = [f"{title} (wall time {wall_s:.1f}s)"]
        lines += [f"t={at - self.started_at:6.1f}s  {text}" for at, text in sorted(rows)]
        text = "\n".join(lines)
        print(text)
        if target := os.environ.get("VSS_ROLLOUT_TIMELINES"):
            with Path(target).open("a") as sink:
                sink.write(text + "\n\n")
        return text


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def event_time(event: dict[str, Any]) -> float:
    return stamp(event.get("eventTime") or event.get("lastTimestamp") or event["metadata"]["creationTimestamp"])


RolloutFactory = Callable[..., Rollout]


@pytest.fixture(name="rollout")
def rollout_fixture(k8s_cluster: LocalCluster, k8s_namespace: str, prometheus: PrometheusServer,
                    model_files: dict[str, Path], tmp_path: Path) -> Iterator[RolloutFactory]:
    """Make a VSSModel `name` serving v1 (Ready), whose v2 is the `canary` model file, with a predictor
    process per version that Prometheus scrapes; the processes are stopped after the test."""
    processes: list[Any] = []

    def make(name: str, canary: str, **rollout: Any) -> Rollout:
        doc = model_doc(name, k8s_namespace, (model_files["stable"], model_files[canary]),
                        **rollout)
        spec = VSSModelSpec.model_validate(doc["spec"])
        with ThreadPoolExecutor(2) as pool:
            started = list(pool.map(lambda v: start_predictor(spec, name, v, tmp_path), ("v1", "v2")))
        processes.extend(p.process for p in started)
        for predictor in started:
            prometheus.scrape(predictor.instance, pod=f"{name}-{predictor.version}")
        setup = Rollout(k8s_cluster, k8s_namespace, name, {p.version: p for p in started})
        k8s_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        setup.set_ready("v1")
        setup.wait_status(lambda s: s.get("phase") == "Stable" and s.get("stableVersion") == "v1"
                          and any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", [])),
                          f"{name} serving v1")
        # The predictor creates a version's duration series at its first request; KServe's warm-up and
        # readiness traffic would have made it before a canary takes traffic, so one request does here.
        # Without it the canary's first check finds no duration samples (no data, not a pass or a fail).
        for predictor in started:
            assert predictor.infer(SIDE) == 200
        scraped = time.time()
        for predictor in started:  # both scraped since: the first check finds their series
            prometheus.scraped_after(predictor.instance, scraped)
        return setup

    yield make
    stop(processes)


def traffic(setup: Rollout, k8s_cluster: LocalCluster, sides: tuple[int, ...] = (SIDE,)) -> TrafficLoop:
    return TrafficLoop(k8s_cluster.api_client(), setup.namespace, setup.name, setup.predictors, sides=sides)


def history(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(h["version"], h["result"]) for h in status.get("history") or []]


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    remaining = iter(seen)
    return all(any(item == s for s in remaining) for item in wanted)


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
