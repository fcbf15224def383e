"""Pods that really run: the test node agent (tests/support/node_agent.py) against the real apiserver, scheduler,
and the deployment/replicaset/endpointslice controllers. The predictor runs as the operator renders it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.apiserver import LocalCluster, TestBinaries, wait_until
from tests.support.node_agent import NodeAgent
from vss_api.vssmodel import VSSModel
from vss_operator.render import render

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/vss-serving/predictor-cpu:0.1.0"


@pytest.fixture(scope="module")
def cluster(k8s_binaries: TestBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(k8s_binaries, tmp_path_factory.mktemp("k8s-nodes"), scheduler=True,
                     controllers=[*LocalCluster.DEFAULT_CONTROLLERS, *LocalCluster.WORKLOAD_CONTROLLERS])
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def agent(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgent]:
    api = cluster.api_client()
    node = NodeAgent(api, tmp_path_factory.mktemp("node"), backoff_s=2.0)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        api.close()
        assert not [n for n in node.netns_made if n in left], left
        assert node.bridge not in links


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = cluster.create_namespace("node")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _pod(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
    return out


def _apply(cluster: LocalCluster, *manifests: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": list(manifests)}))


def _predictor_container() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The predictor container and pod volumes exactly as the operator renders them for the classification example."""
    model = VSSModel.from_yaml_file(REPO_ROOT / "examples" / "classification.yaml")
    isvc = next(m for m in render(model) if m["kind"] == "InferenceService")
    predictor = isvc["spec"]["predictor"]
    container = dict(predictor["containers"][0])
    return container, list(predictor.get("volumes") or [])


def test_a_container_failing_its_liveness_probe_is_restarted_with_a_growing_backoff(
        cluster: LocalCluster, agent: NodeAgent, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unwell", "namespace": namespace},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
               "name": "main", "image": IMAGE, "command": ["python", "-c", "import time; time.sleep(600)"],
               # nothing listens on 8085 in this container
               "livenessProbe": {"tcpSocket": {"port": 8085}, "periodSeconds": 1, "failureThreshold": 1}}]}}
    _apply(cluster, pod)
    starts: dict[int, str] = {}

    def restarted_twice() -> bool:
        status = _pod(cluster, namespace, "unwell")["status"]["containerStatuses"][0]
        running = status["state"].get("running")
        if running:
            starts.setdefault(status["restartCount"], running["startedAt"])
        return status["restartCount"] >= 3 and {1, 2} <= starts.keys()

    wait_until(restarted_twice, timeout=90, interval=0.2, what="three liveness restarts of pod unwell")
    status = _pod(cluster, namespace, "unwell")["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 137
    import datetime

    def t(s: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))

    # backoff 2 s then 4 s (the agent's base doubled), on top of the probe's second: the gaps grow.
    assert (t(starts[2]) - t(starts[1])).total_seconds() >= 4


def test_an_init_container_that_fails_keeps_the_pod_at_init_error_and_its_container_never_starts(
        cluster: LocalCluster, agent: NodeAgent, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "no-model", "namespace": namespace},
           "spec": {"restartPolicy": "Never", "initContainers": [
               {"name": "fetch", "image": IMAGE, "command": ["python", "-c", "raise SystemExit(3)"]}],
               "containers": [{"name": "main", "image": IMAGE, "command": ["python", "-c", "print('ran')"]}]}}
    _apply(cluster, pod)

    def init_error() -> str | None:
        out = cluster.kubectl("get", "pod", "no-model", "-n", namespace, "--no-headers").stdout.split()
        return out[2] if out[2] == "Init:Error" else None

    wait_until(init_error, timeout=60, interval=0.3, what="pod no-model at Init:Error")
    status = _pod(cluster, namespace, "no-model")["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert "running" not in status["containerStatuses"][0]["state"]
    assert status["containerStatuses"][0]["restartCount"] == 0
    assert agent.logs(namespace, "no-model", "main") == ""


def test_a_pod_asking_for_a_gpu_is_refused_loudly(cluster: LocalCluster, agent: NodeAgent, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gpu", "namespace": namespace},
           "spec": {"nodeName": agent.node_name, "containers": [
               {"name": "main", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    _apply(cluster, pod)

    def failed() -> dict[str, Any] | None:
        status: dict[str, Any] = _pod(cluster, namespace, "gpu")["status"]
        return status if status.get("phase") == "Failed" else None

    status = wait_until(failed, timeout=30, interval=0.3, what="pod gpu refused")
    assert status["reason"] == "GPUNotEmulated"
    assert "nvidia.com/gpu" in status["message"]
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             "involvedObject.name=gpu,reason=GPUNotEmulated", "-o", "name").stdout
    assert events.strip()


def test_a_wrong_command_fails_the_pod_with_the_process_exit_code(
        cluster: LocalCluster, agent: NodeAgent, namespace: str) -> None:
    container, _ = _predictor_container()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "typo", "namespace": namespace},
           "spec": {"restartPolicy": "Never", "containers": [
               {"name": "main", "image": container["image"], "command": ["python", "-m", "vss_predictorz"],
                "args": container["args"]}]}}
    _apply(cluster, pod)

    def failed() -> dict[str, Any] | None:
        status: dict[str, Any] = _pod(cluster, namespace, "typo")["status"]
        return status if status.get("phase") == "Failed" else None

    status = wait_until(failed, timeout=60, interval=0.3, what="pod typo Failed")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 1 and terminated["reason"] == "Error"
    assert "No module named vss_predictorz" in agent.logs(namespace, "typo", "main")
