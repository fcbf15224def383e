"""The operator on a real kube-apiserver turns a VSSStream into its worker against the model's serving
version, applies edited zones without touching the pod template, follows a promotion, and says when the
model is missing. (No kubelet runs here, so the worker's pod itself does not start: issue #13.)"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorProcess,
    operator_factory_fixture,
    operator_fixture,
)
from tests.support.apiserver import LocalCluster, free_port, wait_until
from vss_models.clips import crossing_clip, write_clip
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


def test_the_worker_reports_its_stream_status_with_a_token_that_may_patch_nothing_else(
        k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess, tmp_path: Path) -> None:
    """A real `vss stream --report-status` (a generated clip, a model endpoint nobody serves) writes the status
    of its VSSStream with the token of the ServiceAccount the operator rendered for it, through the real
    apiserver and its RBAC; the same token is refused everything else."""
    _apply(k8s_cluster, MODEL, k8s_namespace)
    _apply(k8s_cluster, STREAM, k8s_namespace)
    wait_until(lambda: _get(k8s_cluster, "rolebinding", "gate-worker", k8s_namespace), timeout=DEADLINE,
               what="the worker's RoleBinding")
    token = k8s_cluster.kubectl("create", "token", "gate-worker", "-n", k8s_namespace).stdout.strip()
    token_file = tmp_path / "token"
    token_file.write_text(token)
    clip = write_clip(crossing_clip(frames=30, width=320, height=180), tmp_path / "gate.mp4")
    local = json.loads(json.dumps(STREAM))
    local["metadata"]["namespace"] = k8s_namespace
    local["spec"]["source"] = {"url": f"file://{clip}"}
    local["spec"]["sampling"] = {"mode": "exhaustive", "fps": 15}
    stream_file = tmp_path / "gate.yaml"
    stream_file.write_text(yaml.safe_dump(local))

    done = subprocess.run(
        [sys.executable, "-m", "vss_cli.main", "stream", str(stream_file), "--model-grpc", f"127.0.0.1:{free_port()}",
         "--report-status", "--kube-api", k8s_cluster.server, "--kube-token-file", str(token_file),
         "--kube-ca-file", str(k8s_cluster.pki.ca.cert)],
        capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "not written" not in done.stderr, done.stderr[-3000:]
    status = (_get(k8s_cluster, "vssstream", "gate", k8s_namespace) or {}).get("status") or {}
    assert status["source"]["resolution"] == "320x180" and status["source"]["reconnects"] == 0
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] == "SourceEnded"
    assert conditions["Stalled"]["status"] == "False" and conditions["Reconciling"]["status"] == "False"
    assert status["modelEndpoint"].startswith("detector-v1-predictor.")  # the operator's field is kept

    account = f"system:serviceaccount:{k8s_namespace}:gate-worker"

    def may(*args: str) -> bool:
        return k8s_cluster.kubectl("auth", "can-i", *args, "-n", k8s_namespace, f"--as={account}",
                                   check=False).stdout.strip() == "yes"

    def with_token(method: str, path: str) -> int:
        """A request with the worker's token alone (no client certificate)."""
        request = urllib.request.Request(f"{k8s_cluster.server}{path}", method=method, data=b"{}" if method == "PATCH"
                                         else None, headers={"Authorization": f"Bearer {token}",
                                                             "Content-Type": "application/merge-patch+json"})
        context = ssl.create_default_context(cafile=str(k8s_cluster.pki.ca.cert))
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    streams = f"/apis/serving.vss.ai/v1alpha1/namespaces/{k8s_namespace}/vssstreams"
    assert may("patch", "vssstreams.serving.vss.ai/gate", "--subresource=status")
    assert not may("patch", "vssstreams.serving.vss.ai/other", "--subresource=status")
    assert not may("patch", "vssstreams.serving.vss.ai/gate") and not may("get", "vssstreams.serving.vss.ai/gate")
    assert not may("get", "secrets") and not may("list", "vssstreams.serving.vss.ai")
    assert with_token("PATCH", f"{streams}/gate/status") == 200
    assert with_token("PATCH", f"{streams}/other/status") == 403
    assert with_token("GET", f"/api/v1/namespaces/{k8s_namespace}/secrets") == 403


def test_deleting_a_stream_removes_its_worker_and_everything_rendered_for_it(
        k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess) -> None:
    """The children go with their owner through the real kube-controller-manager's garbage collector."""
    _apply(k8s_cluster, MODEL, k8s_namespace)
    _apply(k8s_cluster, STREAM, k8s_namespace)
    kinds = ("deployment", "service", "configmap", "serviceaccount", "role", "rolebinding")
    names = {kind: "gate-worker-config" if kind == "configmap" else "gate-worker" for kind in kinds}
    wait_until(lambda: all(_get(k8s_cluster, kind, names[kind], k8s_namespace) for kind in kinds),
               timeout=DEADLINE, what="everything rendered for the stream")

    k8s_cluster.kubectl("delete", "vssstream", "gate", "-n", k8s_namespace, "--wait=false")

    wait_until(lambda: not any(_get(k8s_cluster, kind, names[kind], k8s_namespace) for kind in kinds),
               timeout=DEADLINE, what="the stream's children garbage-collected")
