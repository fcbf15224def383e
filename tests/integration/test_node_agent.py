"""Pods that really run: the test node agent (tests/support/node_agent.py) against the real apiserver, scheduler,
and the deployment/replicaset/endpointslice controllers. The predictor runs as the operator renders it."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.onnx_graphs import CLASSES, mean_colour_classifier, save
from tests.support.apiserver import LocalCluster, TestBinaries, wait_until
from tests.support.node_agent import NodeAgent
from vss_api.vssmodel import Processes, VSSModel
from vss_operator.render import PREDICTOR_HTTP_PORT, TRANSFORMER_HTTP_PORT, render

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


def _predictor_container(processes: str = "two") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first container (the predictor, or with `processes: single` the one container that serves the whole
    API) and pod volumes exactly as the operator renders them for the classification example."""
    model = VSSModel.from_yaml_file(REPO_ROOT / "examples" / "classification.yaml")
    model.spec.predictor.processes = Processes(processes)
    isvc = next(m for m in render(model) if m["kind"] == "InferenceService")
    predictor = isvc["spec"]["predictor"]
    container = dict(predictor["containers"][0])
    return container, list(predictor.get("volumes") or [])


@pytest.mark.parametrize("processes", ["two", "single"])
def test_a_deployment_of_the_rendered_predictor_serves_v2_from_two_pods_with_their_own_addresses(
        cluster: LocalCluster, agent: NodeAgent, namespace: str, tmp_path: Path, processes: str) -> None:
    """The predictor container of the two-process layout answers the model's own tensors on 8085; the one
    container of single-process mode answers the client API (pixels in, labels out) on 8080."""
    source = tmp_path / "store"
    source.mkdir()
    save(mean_colour_classifier(), source / "classifier.onnx")
    container, volumes = _predictor_container(processes)
    port = PREDICTOR_HTTP_PORT if processes == "two" else TRANSFORMER_HTTP_PORT
    assert container["args"][container["args"].index("--model_path") + 1] == "/mnt/models"
    # As KServe's storage initializer would: an init container copies the model into an emptyDir, and the
    # predictor gets the file itself at /mnt/models (subPath), the way a pvc://claim/file URI is mounted.
    container["volumeMounts"] = [*container.get("volumeMounts", []),
                                 {"name": "models", "mountPath": "/mnt/models", "subPath": "classifier.onnx",
                                  "readOnly": True}]
    init = {"name": "storage-initializer", "image": IMAGE, "command": ["python", "-c"],
            "args": ["import shutil, sys; shutil.copy('/store/classifier.onnx', '/mnt/out/classifier.onnx')"],
            "volumeMounts": [{"name": "store", "mountPath": "/store", "readOnly": True},
                             {"name": "models", "mountPath": "/mnt/out"}]}
    volumes = [v for v in volumes if v["name"] != "models"] + [
        {"name": "models", "emptyDir": {}}, {"name": "store", "hostPath": {"path": str(source)}}]
    if not any(v["name"] == "tmp" for v in volumes):
        volumes.append({"name": "tmp", "emptyDir": {}})
    labels = {"app": "classifier"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "classifier",
                                                                              "namespace": namespace},
                  "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                           "template": {"metadata": {"labels": labels},
                                        "spec": {"initContainers": [init], "containers": [container],
                                                 "volumes": volumes, "terminationGracePeriodSeconds": 2}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "classifier", "namespace": namespace},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": port}]}}
    _apply(cluster, deployment, service)

    def endpoints() -> list[str] | None:
        out = cluster.kubectl("get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=classifier",
                              "-o", "json").stdout
        ips = [a for s in json.loads(out)["items"] for e in s.get("endpoints") or []
               if (e.get("conditions") or {}).get("ready") for a in e["addresses"]]
        return ips if len(ips) == 2 else None

    ips = wait_until(endpoints, timeout=120, interval=1, what="two ready endpoints of Service classifier")
    assert len(set(ips)) == 2
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert sorted(p["status"]["podIP"] for p in pods) == sorted(ips)
    assert all(p["status"]["phase"] == "Running" and p["spec"]["nodeName"] == agent.node_name for p in pods)
    red = np.broadcast_to(np.array((250, 10, 10), np.uint8), (1, 224, 224, 3))
    body = {"inputs": [{"name": "images" if processes == "two" else "pixels", "shape": list(red.shape),
                        "datatype": "UINT8", "data": red.ravel().tolist()}]}
    for ip in ips:
        request = urllib.request.Request(f"http://{ip}:{port}/v2/models/classifier/infer",
                                         data=json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
        if processes == "two":
            logits = answer["outputs"][0]["data"]
            assert int(np.argmax(logits)) == CLASSES.index("red"), answer
        else:
            labels = next(o for o in answer["outputs"] if o["name"] == "labels")
            assert labels["data"][0] == "red", answer


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
