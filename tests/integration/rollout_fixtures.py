"""What the rollout tests share: a real Prometheus, the versions' ONNX files, an operator configured with
that Prometheus, and `Rollout`, one VSSModel serving v1 with a REAL predictor process per version that
Prometheus scrapes (`rollout` makes them). No KServe controller runs: `Rollout.set_ready` writes an
InferenceService's status as KServe would. Intervals are shortened through the spec, never by patching code.

Test modules import the fixtures (`*_fixture`) and ask for `prometheus`, `model_files`, `operator`, `rollout`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
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
from tests.integration.operator_fixtures import OperatorFactory, OperatorProcess
from tests.integration.rollout_traffic import TrafficLoop
from tests.support.apiserver import ClusterError, LocalCluster, wait_until
from vss_api.vssmodel import VSSModel, VSSModelSpec
from vss_operator.render import kserve_host_problem

SIDE = 64  # the frame size every version accepts; the erroring canary refuses every other size
INTERVAL_S = 3.0
FAILURE_LIMIT = 2
DEADLINE = 60.0
ROLLOUT_REASONS = {"RolloutStarted", "RetryStarted", "ShadowStarted", "StepAdvanced", "AwaitingPromotion", "Promoted",
                   "RolloutCompleted", "CheckFailed", "CheckNoData", "AnalysisFailed", "NoAnalysisData",
                   "ProgressDeadlineExceeded", "CanaryFailed", "RolloutAborted"}


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", name="prometheus")
def prometheus_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with prometheus_server.prometheus_server(tmp_path_factory.mktemp("rollout-prometheus")) as server:
        yield server


@pytest.fixture(scope="module", name="model_files")
def model_files_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
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
def operator_with_prometheus_fixture(operator_factory: OperatorFactory, prometheus: PrometheusServer
                                     ) -> OperatorProcess:
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
            "predictor": {"runtime": "onnxruntime", "threads": 1, "batching": {"maxBatchSize": 4, "maxLatencyMs": 0}},
            "transformer": {"detection": {"inputSize": SIDE, "rectangular": False}},
            "rollout": {"steps": [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}],
                        "analysis": analysis, "progressDeadline": "60s", "scaleDownDelay": "2s", **rollout},
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

    def stalled(self) -> str | None:
        """The operator's reason for making nothing (e.g. a name over KServe's budget), if it gave one."""
        found = self.condition("Stalled")
        return f"VSSModel Stalled: {found.get('reason')}: {found.get('message')}" \
            if found and found.get("status") == "True" else None

    def set_ready(self, version: str) -> None:
        """Write the InferenceService's status as KServe's controller does once its pods are ready."""
        isvc = f"{self.name}-{version}"
        wait_until(lambda: self.get("inferenceservice", isvc), timeout=DEADLINE, what=isvc, abort=self.stalled)
        ready = {"status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        status = {"observedGeneration": 1, "url": f"http://{isvc}.{self.namespace}.example.com",
                  "conditions": [{**ready, "type": "PredictorReady"}, {**ready, "type": "Ready"}]}
        self.cluster.kubectl("patch", "inferenceservice", isvc, "-n", self.namespace, "--subresource=status",
                             "--type=merge", "-p", json.dumps({"status": status}))

    def start(self, *, ready: bool = True) -> None:
        """The GitOps commit: spec.version v1 → v2; then (unless not `ready`) KServe brings v2 up."""
        self.started_at = time.time()
        self.cluster.kubectl("patch", "vssm", self.name, "-n", self.namespace, "--type=merge", "-p",
                             json.dumps({"spec": {"version": "v2"}}))
        if ready:
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
        # A name over KServe's host budget is Stalled by the operator and never served: say so here.
        assert (problem := kserve_host_problem(VSSModel.model_validate(doc))) is None, problem
        with ThreadPoolExecutor(2) as pool:
            started = list(pool.map(lambda v: start_predictor(spec, name, v, tmp_path), ("v1", "v2")))
        processes.extend(p.process for p in started)
        for predictor in started:  # the target labels Kubernetes service discovery gives a model pod
            prometheus.scrape(predictor.instance, pod=f"{name}-{predictor.version}", namespace=k8s_namespace)
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


def is_subsequence(wanted: Sequence[object], seen: Sequence[object]) -> bool:
    remaining = iter(seen)
    return all(any(item == s for s in remaining) for item in wanted)
