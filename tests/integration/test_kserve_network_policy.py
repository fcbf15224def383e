"""The NetworkPolicy render gives a VSSModel selects the Pods KServe itself creates for that model's
InferenceServices, every version of them, and no Pod of another model (the ``kserve_cluster`` fixture: KServe's
real webhooks and controller, the deployment and replicaset controllers).

Which traffic the policy lets through is not tested here: no CNI runs in this cluster, so nothing enforces a
NetworkPolicy; the apiserver only validates and stores it. Its rules are tested in
tests/unit/vss_operator/test_render_network_policy.py, and it needs a CNI that enforces NetworkPolicy (Calico,
Cilium, ...) to take effect.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from tests.integration.conftest import KServeCluster
from tests.integration.test_kserve_admission import DEADLINE, ISVC_LABEL, _create, _pods, kserve_namespace
from tests.support.apiserver import LocalCluster, wait_until
from vss_api.vssmodel import VSSModel
from vss_operator.render import render

__all__ = ["kserve_namespace"]


def _model(name: str, namespace: str) -> VSSModel:
    return VSSModel.model_validate({
        "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"task": "classification", "version": "v1",
                 "versions": [{"name": "v1", "storageUri": "pvc://vss-models/classifier.onnx"},
                              {"name": "v2", "storageUri": "pvc://vss-models/classifier.onnx"}]}})


def selector_string(selector: dict[str, Any]) -> str:
    """A LabelSelector as `kubectl get -l` takes it."""
    terms = [f"{k}={v}" for k, v in selector.get("matchLabels", {}).items()]
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        terms.append({"Exists": key, "DoesNotExist": f"!{key}", "In": f"{key} in ({','.join(values)})",
                      "NotIn": f"{key} notin ({','.join(values)})"}[operator])
    return ",".join(terms)


def _pod_names(cluster: LocalCluster, namespace: str, selector: str) -> set[str]:
    found = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)
    return {p["metadata"]["name"] for p in found["items"]}


def test_the_policy_selects_exactly_the_pods_kserve_creates_for_the_model_in_every_version(
        kserve_cluster: KServeCluster, kserve_namespace: str) -> None:
    cluster = kserve_cluster.cluster
    # `yolo` during a canary (two InferenceServices), and `yolox` beside it, whose name has yolo's as a prefix.
    yolo = render(_model("yolo", kserve_namespace), stable_version="v1", canary_version="v2", canary_weight=10)
    other = render(_model("yolox", kserve_namespace))
    (policy,) = [m for m in yolo if m["kind"] == "NetworkPolicy"]
    # Stored as rendered (the apiserver validates it; nothing enforces it), then read back as stored.
    stored = _create(cluster, policy)
    pods: dict[str, set[str]] = {}
    for manifest in [*yolo, *other]:
        if manifest["kind"] != "InferenceService":
            continue
        name = manifest["metadata"]["name"]
        _create(cluster, manifest)
        found = wait_until(functools.partial(_pods, cluster, name, kserve_namespace), timeout=DEADLINE,
                           what=f"Pods of {name} created by KServe's Deployment",
                           abort=kserve_cluster.kserve.process.exit_reason)
        pods[name] = {p["metadata"]["name"] for p in found}
        print(name, json.dumps({k: found[0]["metadata"][k] for k in ("labels", "annotations")}, indent=1))
    print(json.dumps({name: sorted(names) for name, names in pods.items()}, indent=1))

    selected = _pod_names(cluster, kserve_namespace, selector_string(stored["spec"]["podSelector"]))

    assert selected == pods["yolo-v1"] | pods["yolo-v2"]
    assert not selected & pods["yolox-v1"]
    # Every Pod there is KServe's: the selector is not satisfied by some other object's labels by chance.
    assert _pod_names(cluster, kserve_namespace, ISVC_LABEL) == set[str]().union(*pods.values())
