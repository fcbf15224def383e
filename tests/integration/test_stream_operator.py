"""The operator on a real kube-apiserver turns a VSSStream into its worker against the model's serving
version, applies edited zones without touching the pod template, follows a promotion, and says when the
model is missing. (No kubelet runs here, so the worker's pod itself does not start: issue #13.)"""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorProcess,
    operator_factory_fixture,
    operator_fixture,
)
from tests.support.apiserver import LocalCluster, wait_until
from vss_operator.stream_render import SPEC_HASH

DEADLINE = 60.0
MODEL = {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel", "metadata": {"name": "detector"},
         "spec": {"task": "detection", "version": "v1", "versions": [
             {"name": "v1", "storageUri": "pvc://models/v1.onnx"}, {"name": "v2", "storageUri": "pvc://models/v2.onnx"}]}}
STREAM = {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSStream", "metadata": {"name": "gate"},
          "spec": {"source": {"url": "rtsp://camera-7:8554/live", "credentials": {"secretName": "camera-7"}},
                   "model": {"name": "detector"},
                   "analytics": {"lines": [{"name": "road", "from": [0, 0.5], "to": [1, 0.5]}]}}}


def _apply(cluster: LocalCluster, doc: dict[str, Any], namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def _get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _args(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _ready_reason(cluster: LocalCluster, namespace: str) -> str | None:
    stream = _get(cluster, "vssstream", "gate", namespace) or {}
    ready = next((c for c in (stream.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
    return ready["reason"] if ready else None


def test_a_stream_becomes_its_worker_calling_the_serving_version_and_follows_edits_and_promotions(
        k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess) -> None:
    _apply(k8s_cluster, MODEL, k8s_namespace)
    _apply(k8s_cluster, STREAM, k8s_namespace)

    deployment = wait_until(lambda: _get(k8s_cluster, "deployment", "gate-worker", k8s_namespace),
                            timeout=DEADLINE, what="the worker Deployment")
    endpoint = f"detector-v1-predictor.{k8s_namespace}.svc.cluster.local:8081"
    assert _args(deployment)[:2] == ["--model-grpc", endpoint]
    assert wait_until(lambda: _get(k8s_cluster, "service", "gate-worker", k8s_namespace), timeout=DEADLINE,
                      what="the worker Service")
    assert wait_until(lambda: _ready_reason(k8s_cluster, k8s_namespace) == "WorkerStarting", timeout=DEADLINE,
                      what="status WorkerStarting")
    spec_hash = deployment["spec"]["template"]["metadata"]["annotations"][SPEC_HASH]

    # zones edited: the ConfigMap changes, the pod template does not
    edited = json.loads(json.dumps(STREAM))
    edited["spec"]["analytics"]["zones"] = [{"name": "kerb", "polygon": [[0, 0.8], [0.3, 0.8], [0.3, 1]]}]
    _apply(k8s_cluster, edited, k8s_namespace)
    wait_until(lambda: "kerb" in (_get(k8s_cluster, "configmap", "gate-worker-config", k8s_namespace) or {}).get(
        "data", {}).get("stream.yaml", ""), timeout=DEADLINE, what="the zone in the ConfigMap")
    after = _get(k8s_cluster, "deployment", "gate-worker", k8s_namespace)
    assert after is not None and after["spec"]["template"]["metadata"]["annotations"][SPEC_HASH] == spec_hash

    # the rollout promotes v2: the worker calls v2
    k8s_cluster.kubectl("patch", "vssm", "detector", "-n", k8s_namespace, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"stableVersion": "v2"}}))
    wait_until(lambda: _args(_get(k8s_cluster, "deployment", "gate-worker", k8s_namespace) or deployment)[1]
               == f"detector-v2-predictor.{k8s_namespace}.svc.cluster.local:8081",
               timeout=DEADLINE, what="the worker following the promotion")
    assert "Forbidden" not in operator.log()


def test_a_stream_of_a_model_that_does_not_exist_says_so_in_its_status(
        k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess) -> None:
    _apply(k8s_cluster, STREAM, k8s_namespace)

    assert wait_until(lambda: _ready_reason(k8s_cluster, k8s_namespace) == "ModelNotFound", timeout=DEADLINE,
                      what="status ModelNotFound")
    assert _get(k8s_cluster, "deployment", "gate-worker", k8s_namespace) is None
