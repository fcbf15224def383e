"""The operator on a real kube-apiserver: examples become InferenceServices, HTTPRoutes and NetworkPolicies, KServe's
status flows up to the VSSModel's kstatus conditions, edits, deletion, restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorFactory,
    OperatorProcess,
    operator_factory_fixture,
    operator_fixture,
)
from tests.support.apiserver import LocalCluster, wait_until
from vss_api.vssmodel import VSSModel
from vss_operator.render import render

# The VSSModel examples (examples/ holds VSSStreams too).
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")
                  if "kind: VSSModel" in p.read_text())
DEADLINE = 60.0

MODEL = """
apiVersion: serving.vss.ai/v1alpha1
kind: VSSModel
metadata:
  name: yolo
spec:
  task: detection
  version: v1
  versions:
    - {name: v1, storageUri: "s3://models/yolo/v1/model.onnx"}
    - {name: v2, storageUri: "s3://models/yolo/v2/model.onnx"}
"""


def _get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def _list(cluster: LocalCluster, kind: str, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
    return items


def _names(cluster: LocalCluster, kind: str, namespace: str) -> list[str]:
    return sorted(i["metadata"]["name"] for i in _list(cluster, kind, namespace))


def _apply(cluster: LocalCluster, text: str, namespace: str) -> dict[str, Any]:
    """kubectl apply a VSSModel into the test namespace (examples name their own namespace)."""
    doc = yaml.safe_load(text)
    doc["metadata"]["namespace"] = namespace
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    return doc


def _condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    if body is None:
        return None
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def _set_isvc_ready(cluster: LocalCluster, name: str, namespace: str, value: str, reason: str = "",
                    message: str = "") -> None:
    """Write an InferenceService status the way KServe's controller does (status subresource)."""
    condition = {"type": "Ready", "status": value, "lastTransitionTime": "2025-01-01T00:00:00Z"}
    if reason:
        condition |= {"reason": reason, "message": message}
    status = {"observedGeneration": 1, "url": f"http://{name}.{namespace}.example.com",
              "conditions": [{**condition, "type": "PredictorReady"}, condition]}
    cluster.kubectl("patch", "inferenceservice", name, "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": status}))


def _is_subset(expected: Any, actual: Any) -> bool:
    """Every field of EXPECTED is in ACTUAL (the apiserver may add defaults around them)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _is_subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            _is_subset(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_becomes_inferenceservices_and_an_httproute_with_the_expected_spec(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess, example: Path,
) -> None:
    doc = _apply(k8s_cluster, example.read_text(), k8s_namespace)
    name = doc["metadata"]["name"]

    live = wait_until(lambda: _get(k8s_cluster, "vssm", name, k8s_namespace), timeout=DEADLINE, what=name)
    expected = render(VSSModel.from_body(live))
    for manifest in expected:
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        actual = wait_until(lambda kind=kind, child=child: _get(k8s_cluster, kind, child, k8s_namespace),
                            timeout=DEADLINE, what=f"{kind} {child}")
        assert _is_subset(manifest["spec"], actual["spec"]), f"{kind} {child}: {actual['spec']}"
        assert _is_subset(manifest["metadata"]["labels"], actual["metadata"]["labels"])
        assert actual["metadata"]["ownerReferences"] == manifest["metadata"]["ownerReferences"]
    assert {m["kind"] for m in expected} == {"InferenceService", "HTTPRoute", "NetworkPolicy"}


def test_model_becomes_ready_when_kserve_reports_its_inferenceservice_ready(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess,
) -> None:
    _apply(k8s_cluster, MODEL, k8s_namespace)
    wait_until(lambda: _get(k8s_cluster, "inferenceservice", "yolo-v1", k8s_namespace), timeout=DEADLINE,
               what="yolo-v1")
    pending = wait_until(lambda: _condition(_get(k8s_cluster, "vssm", "yolo", k8s_namespace), "Ready"),
                         timeout=DEADLINE, what="a Ready condition")
    assert pending["status"] == "False"

    _set_isvc_ready(k8s_cluster, "yolo-v1", k8s_namespace, "True")

    waited = k8s_cluster.kubectl("wait", "--for=condition=Ready", "vssm/yolo", "-n", k8s_namespace,
                                 f"--timeout={DEADLINE:.0f}s", check=False)
    assert waited.returncode == 0, waited.stderr
    model = _get(k8s_cluster, "vssm", "yolo", k8s_namespace)
    assert model is not None
    status = model["status"]
    assert status["observedGeneration"] == model["metadata"]["generation"]
    assert status["phase"] == "Stable"
    assert status["stableVersion"] == "v1"
    assert status["url"] == f"http://yolo.{k8s_namespace}.example.com"
    assert _condition(model, "Reconciling") is None
    table = k8s_cluster.kubectl("get", "vssm", "-n", k8s_namespace).stdout
    print(table)
    assert table.split("\n")[0].split() == ["NAME", "VERSION", "CANARY", "WEIGHT", "PHASE", "READY", "AGE"]
    assert table.split("\n")[1].split()[:2] == ["yolo", "v1"]
    assert "True" in table.split("\n")[1].split()
    wide = k8s_cluster.kubectl("get", "vssm", "-n", k8s_namespace, "-o", "wide").stdout
    print(wide)
    assert {"TASK", "STABLE"} <= set(wide.split("\n")[0].split())
    events = k8s_cluster.kubectl("get", "events", "-n", k8s_namespace, "--field-selector",
                                 "involvedObject.name=yolo", "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert "InferenceServicesReady" in reasons


def test_model_is_not_ready_with_the_reason_its_inferenceservice_gives(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess,
) -> None:
    _apply(k8s_cluster, MODEL, k8s_namespace)
    wait_until(lambda: _get(k8s_cluster, "inferenceservice", "yolo-v1", k8s_namespace), timeout=DEADLINE,
               what="yolo-v1")

    _set_isvc_ready(k8s_cluster, "yolo-v1", k8s_namespace, "False", "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.")

    def not_ready_with_reason() -> dict[str, Any] | None:
        ready = _condition(_get(k8s_cluster, "vssm", "yolo", k8s_namespace), "Ready")
        return ready if ready and ready["reason"] == "MinimumReplicasUnavailable" else None

    ready = wait_until(not_ready_with_reason, timeout=DEADLINE, what="Ready=False from the child")
    assert ready["status"] == "False"
    assert ready["message"] == "InferenceService yolo-v1: Deployment does not have minimum availability."
    model = _get(k8s_cluster, "vssm", "yolo", k8s_namespace)
    assert (_condition(model, "Reconciling") or {}).get("status") == "True"


def test_editing_the_spec_updates_the_children_and_observed_generation_follows(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess,
) -> None:
    _apply(k8s_cluster, MODEL, k8s_namespace)
    wait_until(lambda: _get(k8s_cluster, "inferenceservice", "yolo-v1", k8s_namespace), timeout=DEADLINE,
               what="yolo-v1")

    k8s_cluster.kubectl("patch", "vssm", "yolo", "-n", k8s_namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"predictor": {"maxReplicas": 3}}}))

    def scaled() -> bool:
        isvc = _get(k8s_cluster, "inferenceservice", "yolo-v1", k8s_namespace)
        return bool(isvc and isvc["spec"]["predictor"]["maxReplicas"] == 3)

    wait_until(scaled, timeout=DEADLINE, what="maxReplicas 3 on yolo-v1")

    def observed_follows() -> bool:
        model = _get(k8s_cluster, "vssm", "yolo", k8s_namespace) or {}
        return (model.get("status") or {}).get("observedGeneration") == model["metadata"]["generation"]

    wait_until(observed_follows, timeout=DEADLINE, what="observedGeneration == generation")

    # A version change is a rollout; `Immediate` promotes as soon as the new version is ready.
    k8s_cluster.kubectl("patch", "vssm", "yolo", "-n", k8s_namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"version": "v2", "rollout": {"strategy": "Immediate"}}}))

    wait_until(lambda: _get(k8s_cluster, "inferenceservice", "yolo-v2", k8s_namespace), timeout=DEADLINE,
               what="yolo-v2 next to yolo-v1")
    _set_isvc_ready(k8s_cluster, "yolo-v2", k8s_namespace, "True")
    wait_until(lambda: _names(k8s_cluster, "inferenceservice", k8s_namespace) == ["yolo-v2"],
               timeout=DEADLINE, what="only yolo-v2 left")
    route = _get(k8s_cluster, "httproute", "yolo", k8s_namespace)
    assert route is not None
    assert [b["name"] for b in route["spec"]["rules"][0]["backendRefs"]] == ["yolo-v2-predictor"]
    wait_until(observed_follows, timeout=DEADLINE, what="observedGeneration after the version change")
    model = _get(k8s_cluster, "vssm", "yolo", k8s_namespace)
    assert model is not None
    assert (model["status"]["phase"], model["status"]["stableVersion"]) == ("Stable", "v2")
    assert [(h["version"], h["result"]) for h in model["status"]["history"]] == [("v2", "Promoted")]


def test_deleting_the_model_lets_the_garbage_collector_remove_its_children(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess,
) -> None:
    _apply(k8s_cluster, MODEL, k8s_namespace)
    wait_until(lambda: _get(k8s_cluster, "httproute", "yolo", k8s_namespace), timeout=DEADLINE, what="route")
    operator.stop()  # the garbage collector alone removes the children: no finalizer, no operator needed

    k8s_cluster.kubectl("delete", "vssm", "yolo", "-n", k8s_namespace, "--timeout=30s")

    wait_until(lambda: not _list(k8s_cluster, "inferenceservice", k8s_namespace)
               and not _list(k8s_cluster, "httproute", k8s_namespace)
               and not _list(k8s_cluster, "networkpolicy", k8s_namespace), timeout=DEADLINE,
               what="the garbage collector to delete the children")


def test_turning_the_network_policy_off_deletes_it_and_turning_it_on_applies_it_again(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess,
) -> None:
    """Only the object is checked: no CNI runs here, so what the policy lets through is not enforced by anyone
    (tests/unit/vss_operator/test_render_network_policy.py holds its rules)."""
    _apply(k8s_cluster, MODEL, k8s_namespace)
    policy = wait_until(lambda: _get(k8s_cluster, "networkpolicy", "yolo", k8s_namespace), timeout=DEADLINE,
                        what="the NetworkPolicy yolo")
    model = _get(k8s_cluster, "vssm", "yolo", k8s_namespace)
    assert model is not None
    assert [(r["kind"], r["uid"], r["controller"]) for r in policy["metadata"]["ownerReferences"]] == [
        ("VSSModel", model["metadata"]["uid"], True)]
    # A CPU model serves in one process: callers and the scrape both reach 8080 (8081 gRPC), no 8085.
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [8080, 8081, 8080]

    k8s_cluster.kubectl("patch", "vssm", "yolo", "-n", k8s_namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"networkPolicy": {"enabled": False}}}))
    wait_until(lambda: not _list(k8s_cluster, "networkpolicy", k8s_namespace), timeout=DEADLINE,
               what="the NetworkPolicy pruned")
    assert _names(k8s_cluster, "inferenceservice", k8s_namespace) == ["yolo-v1"]
    assert _names(k8s_cluster, "httproute", k8s_namespace) == ["yolo"]

    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kserve"}}}
    k8s_cluster.kubectl("patch", "vssm", "yolo", "-n", k8s_namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"networkPolicy": {"enabled": True, "ingressFrom": [gateway]}}}))
    again = wait_until(lambda: _get(k8s_cluster, "networkpolicy", "yolo", k8s_namespace), timeout=DEADLINE,
                       what="the NetworkPolicy applied again")
    assert again["spec"]["ingress"][0]["from"] == [gateway]


def test_a_restarted_operator_converges_without_duplicate_children(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator_factory: OperatorFactory,
) -> None:
    first = operator_factory()
    first.wait_leading()
    _apply(k8s_cluster, MODEL, k8s_namespace)
    wait_until(lambda: _get(k8s_cluster, "inferenceservice", "yolo-v1", k8s_namespace), timeout=DEADLINE,
               what="yolo-v1")
    assert first.stop() == 0

    # Changed while no operator runs: the next one resumes and converges.
    k8s_cluster.kubectl("patch", "vssm", "yolo", "-n", k8s_namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"predictor": {"minReplicas": 2, "maxReplicas": 2}}}))
    second = operator_factory()
    second.wait_leading()

    def converged() -> bool:
        isvc = _get(k8s_cluster, "inferenceservice", "yolo-v1", k8s_namespace)
        return bool(isvc and isvc["spec"]["predictor"]["minReplicas"] == 2)

    wait_until(converged, timeout=DEADLINE, what="minReplicas 2 after the restart")
    assert _names(k8s_cluster, "inferenceservice", k8s_namespace) == ["yolo-v1"]
    assert _names(k8s_cluster, "httproute", k8s_namespace) == ["yolo"]
    isvc = json.loads(k8s_cluster.kubectl("get", "inferenceservice", "yolo-v1", "-n", k8s_namespace, "-o", "json",
                                          "--show-managed-fields").stdout)
    managers = {f["manager"] for f in isvc["metadata"]["managedFields"]}
    assert managers == {"vss-operator"}


def test_apiserver_restart_in_the_middle_of_reconciling_converges(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator_factory: OperatorFactory,
) -> None:
    # A leader that cannot renew its Lease for the renew deadline exits (and its Deployment restarts
    # it; tests/unit/vss_operator/test_leader.py covers that); here no one would restart it, so this
    # operator runs without leader election and must ride the outages out itself.
    operator = operator_factory("--no-leader-election")
    wait_until(lambda: (operator.health() or {}).get("kopf"), timeout=30, what="kopf running")
    _apply(k8s_cluster, MODEL, k8s_namespace)
    k8s_cluster.stop_apiserver()  # the operator's apply/list/status calls now fail and are retried
    k8s_cluster.start_apiserver()

    wait_until(lambda: _get(k8s_cluster, "httproute", "yolo", k8s_namespace), timeout=DEADLINE, what="route")
    _set_isvc_ready(k8s_cluster, "yolo-v1", k8s_namespace, "True")
    k8s_cluster.stop_apiserver()
    k8s_cluster.start_apiserver()
    k8s_cluster.kubectl("patch", "vssm", "yolo", "-n", k8s_namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"predictor": {"maxReplicas": 4}}}))

    def converged() -> bool:
        model = _get(k8s_cluster, "vssm", "yolo", k8s_namespace) or {}
        isvc = _get(k8s_cluster, "inferenceservice", "yolo-v1", k8s_namespace) or {"spec": {"predictor": {}}}
        ready = _condition(model, "Ready") or {}
        return (isvc["spec"]["predictor"].get("maxReplicas") == 4 and ready.get("status") == "True"
                and model["status"].get("observedGeneration") == model["metadata"]["generation"])

    wait_until(converged, timeout=DEADLINE * 2, what="convergence after apiserver restarts")
    assert _names(k8s_cluster, "inferenceservice", k8s_namespace) == ["yolo-v1"]
    assert operator.exit_reason() is None


def _quota(cluster: LocalCluster, namespace: str, inference_services: int) -> None:
    """A ResourceQuota on InferenceServices, its status written as kube-controller-manager's quota controller
    would (this cluster does not run it); the refusal is the apiserver's own ResourceQuota admission."""
    key = "count/inferenceservices.serving.kserve.io"
    doc = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "models", "namespace": namespace},
           "spec": {"hard": {key: str(inference_services)}}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    used = len(_list(cluster, "inferenceservice", namespace))
    cluster.kubectl("patch", "resourcequota", "models", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"hard": {key: str(inference_services)}, "used": {key: str(used)}}}))


def test_a_child_a_resourcequota_forbids_is_retried_and_the_model_becomes_ready_once_the_quota_is_raised(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator: OperatorProcess,
) -> None:
    _quota(k8s_cluster, k8s_namespace, 0)
    _apply(k8s_cluster, MODEL, k8s_namespace)
    forbidden = wait_until(
        lambda: (c := _condition(_get(k8s_cluster, "vssm", "yolo", k8s_namespace), "Ready"))
        and c["reason"] == "ApplyForbidden" and c, timeout=DEADLINE, what="Ready False with reason ApplyForbidden")
    assert forbidden["status"] == "False"
    assert "exceeded quota" in forbidden["message"] and "trying again in" in forbidden["message"]
    model = _get(k8s_cluster, "vssm", "yolo", k8s_namespace)
    reconciling = _condition(model, "Reconciling")
    assert reconciling is not None and (reconciling["status"], reconciling["reason"]) == ("True", "ApplyForbidden")
    assert _condition(model, "Stalled") is None
    generation = model["metadata"]["generation"] if model else None

    _quota(k8s_cluster, k8s_namespace, 5)  # no spec edit: the operator's own retry finds room
    wait_until(lambda: _get(k8s_cluster, "inferenceservice", "yolo-v1", k8s_namespace), timeout=DEADLINE,
               what="yolo-v1 once the quota allows it")
    _set_isvc_ready(k8s_cluster, "yolo-v1", k8s_namespace, "True")
    waited = k8s_cluster.kubectl("wait", "--for=condition=Ready", "vssm/yolo", "-n", k8s_namespace,
                                 f"--timeout={DEADLINE:.0f}s", check=False)
    assert waited.returncode == 0, waited.stderr
    after = _get(k8s_cluster, "vssm", "yolo", k8s_namespace)
    assert after is not None and after["metadata"]["generation"] == generation
    assert _condition(after, "Reconciling") is None
