"""Smoke tests of the integration fixture: the real control plane, CRDs, GC, CLIs and restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.support.apiserver import CommandError, LocalCluster, wait_until

INFERENCE_SERVICE = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: detector
spec:
  predictor:
    model:
      modelFormat:
        name: onnx
      storageUri: pvc://models/detector
"""


def test_servers_and_clients_report_the_pinned_versions(k8s_cluster: LocalCluster) -> None:
    versions = json.loads(k8s_cluster.kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == "v1.34.4"
    assert versions["clientVersion"]["gitVersion"] == "v1.34.4"
    assert k8s_cluster.helm("version", "--short").stdout.startswith("v3.19.5")


def test_upstream_inferenceservice_crd_is_served_by_the_apiserver(
    k8s_cluster: LocalCluster, k8s_namespace: str
) -> None:
    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=INFERENCE_SERVICE)

    isvc = json.loads(
        k8s_cluster.kubectl("get", "inferenceservice", "detector", "-n", k8s_namespace, "-o", "json").stdout
    )
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] == "onnx"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/detector"


def test_python_client_reads_what_kubectl_wrote(
    k8s_cluster: LocalCluster, k8s_api_client: Any, k8s_namespace: str
) -> None:
    from kubernetes import client

    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=INFERENCE_SERVICE)

    isvc = client.CustomObjectsApi(k8s_api_client).get_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", k8s_namespace, "inferenceservices", "detector"
    )
    assert isvc["metadata"]["name"] == "detector"


def test_upstream_crd_schema_rejects_an_invalid_inferenceservice(k8s_cluster: LocalCluster, k8s_namespace: str) -> None:
    bad = INFERENCE_SERVICE.replace("name: detector", "name: bad").replace(
        "  predictor:\n", "  predictor:\n    minReplicas: many\n"
    )
    result = k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=bad, check=False)

    assert result.returncode != 0
    assert "spec.predictor.minReplicas" in result.stderr
    assert "must be of type integer" in result.stderr


def test_gateway_api_httproute_crd_is_served_by_the_apiserver(k8s_cluster: LocalCluster, k8s_namespace: str) -> None:
    resources = k8s_cluster.kubectl("api-resources", "--api-group=gateway.networking.k8s.io", "-o", "name")
    for kind in ("httproutes", "gateways", "gatewayclasses", "referencegrants"):
        assert f"{kind}.gateway.networking.k8s.io" in resources.stdout.split()


def test_garbage_collector_deletes_children_whose_owner_is_gone(k8s_cluster: LocalCluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl("create", "configmap", "owner", "-n", ns)
    owner_uid = k8s_cluster.kubectl("get", "configmap", "owner", "-n", ns, "-o", "jsonpath={.metadata.uid}").stdout
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
    children = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "child", "ownerReferences": [owner_ref]},
        },
        {
            # A child of a CRD kind, as the operator's HTTPRoutes are.
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "child-route", "ownerReferences": [owner_ref]},
            "spec": {"rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]},
        },
    ]
    k8s_cluster.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": children}),
    )

    k8s_cluster.kubectl("delete", "configmap", "owner", "-n", ns, "--cascade=background")

    def children_gone() -> bool:
        left = k8s_cluster.kubectl(
            "get", "configmap/child", "httproute/child-route", "-n", ns, "--ignore-not-found", "-o", "name"
        ).stdout.strip()
        return left == ""

    wait_until(children_gone, timeout=60, interval=0.25, what="the garbage collector to delete the children")


def test_helm_installs_a_chart_into_the_cluster(k8s_cluster: LocalCluster, k8s_namespace: str, tmp_path: Path) -> None:
    k8s_cluster.helm("create", str(tmp_path / "demo"))
    k8s_cluster.helm("install", "demo", str(tmp_path / "demo"), "-n", k8s_namespace)

    releases = json.loads(k8s_cluster.helm("list", "-n", k8s_namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
    k8s_cluster.kubectl("get", "deployment", "demo", "-n", k8s_namespace)


def test_apiserver_restart_keeps_the_data_and_the_controllers_reconnect(
    k8s_cluster: LocalCluster, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl("create", "configmap", "survivor", "-n", ns, "--from-literal=k=v")

    k8s_cluster.stop_apiserver()
    down = k8s_cluster.kubectl("get", "configmap", "survivor", "-n", ns, check=False, timeout=30)
    assert down.returncode != 0
    started = time.monotonic()
    k8s_cluster.start_apiserver()
    assert time.monotonic() - started < 60

    data = k8s_cluster.kubectl("get", "configmap", "survivor", "-n", ns, "-o", "jsonpath={.data.k}").stdout
    assert data == "v"
    # The controller manager outlived the restart and still collects garbage.
    test_garbage_collector_deletes_children_whose_owner_is_gone(k8s_cluster, ns)


def test_kubectl_failures_carry_stderr(k8s_cluster: LocalCluster) -> None:
    try:
        k8s_cluster.kubectl("get", "configmap", "does-not-exist", "-n", "default")
    except CommandError as exc:
        assert "NotFound" in str(exc) or "not found" in str(exc)
    else:
        raise AssertionError("kubectl get of a missing object succeeded")
