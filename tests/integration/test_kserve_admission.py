"""What KServe itself does with the InferenceServices the operator renders: its real webhooks (defaulting,
validation, the pod mutator) and its controller in Standard (raw) mode, on a real apiserver whose
kube-controller-manager runs the deployment and replicaset controllers (the ``kserve_cluster`` fixture).

There is no kubelet: the Pods the ReplicaSet controller creates stay Pending, which is enough to read the
spec KServe's pod mutator gave them. Nothing here is mocked.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import KServeCluster
from tests.support.apiserver import CommandError, LocalCluster, wait_until
from tests.support.upstream_crds import module_dir
from vss_api.vssmodel import NAME_AND_VERSION_LIMIT, NAME_BUDGET_MESSAGE, VSSModel
from vss_operator.render import MODEL_DIR, PREDICTOR_CONTAINER, RenderConfig, isvc_name, render

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")
                  if "kind: VSSModel" in p.read_text())
DEADLINE = 60.0
ISVC_LABEL = "serving.kserve.io/inferenceservice"
# What knative.dev/serving version KServe v0.20's go.mod requires; its CRDs are in config/core/300-resources.
KNATIVE_SERVING_MODULE = "knative.dev/serving"
KNATIVE_SERVING_VERSION = "v0.48.1"


def _get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def _example(path: Path, namespace: str) -> VSSModel:
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["namespace"] = namespace
    return VSSModel.model_validate(doc)


def _isvcs(model: VSSModel, config: RenderConfig | None = None) -> list[dict[str, Any]]:
    manifests = render(model) if config is None else render(model, config)
    return [m for m in manifests if m["kind"] == "InferenceService"]


def _create(cluster: LocalCluster, manifest: dict[str, Any]) -> dict[str, Any]:
    """kubectl create: the object as the apiserver stored it, after every admission webhook."""
    created: dict[str, Any] = json.loads(cluster.kubectl("create", "-f", "-", "-o", "json",
                                                         input=json.dumps(manifest)).stdout)
    return created


def _pods(cluster: LocalCluster, isvc: str, namespace: str) -> list[dict[str, Any]] | None:
    """The Pods of the InferenceService ISVC; None while there are none (for wait_until)."""
    items: list[dict[str, Any]] = json.loads(cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"{ISVC_LABEL}={isvc}", "-o", "json").stdout)["items"]
    return items or None


@pytest.fixture
def kserve_namespace(kserve_cluster: KServeCluster) -> Any:
    cluster = kserve_cluster.cluster
    name = cluster.create_namespace("kserve-test")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_kserve_admits_every_example_and_mounts_its_pvc_model_where_the_predictor_reads_it(
        kserve_cluster: KServeCluster, kserve_namespace: str, example: Path) -> None:
    cluster = kserve_cluster.cluster
    model = _example(example, kserve_namespace)
    for isvc in _isvcs(model):
        name = isvc["metadata"]["name"]
        created = _create(cluster, isvc)
        # KServe's defaulting webhook ran: it rewrites the legacy mode name and fills in the cpu limit default.
        assert created["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"

        deployment = wait_until(functools.partial(_get, cluster, "deployment", f"{name}-predictor", kserve_namespace),
                                timeout=DEADLINE, what=f"KServe's Deployment {name}-predictor",
                                abort=kserve_cluster.kserve.process.exit_reason)
        service = wait_until(functools.partial(_get, cluster, "service", f"{name}-predictor", kserve_namespace),
                             timeout=DEADLINE, what=f"KServe's Service {name}-predictor")
        assert deployment["metadata"]["ownerReferences"][0]["name"] == name
        assert {p["port"] for p in service["spec"]["ports"]} >= {80}

        pods = wait_until(functools.partial(_pods, cluster, name, kserve_namespace), timeout=DEADLINE,
                          what=f"Pods of {name} created by the ReplicaSet controller")
        spec = pods[0]["spec"]
        version = next(v for v in model.spec.versions if isvc_name(model, v.name) == name)
        claim, _, sub_path = version.storage_uri.removeprefix("pvc://").partition("/")
        # KServe's pod mutator mounts the claim itself (no storage-initializer download for pvc://) ...
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["kserve-pvc-source"]["persistentVolumeClaim"]["claimName"] == claim
        predictor = next(c for c in spec["containers"] if c["name"] == PREDICTOR_CONTAINER)
        mount = next(m for m in predictor["volumeMounts"] if m["name"] == "kserve-pvc-source")
        # ... at /mnt/models with the URI's path as subPath: /mnt/models is the model file itself ...
        assert (mount["mountPath"], mount.get("subPath"), mount.get("readOnly")) == (MODEL_DIR, sub_path, True)
        # ... which is the path the predictor is told to load.
        args = predictor["args"]
        assert args[args.index("--model_path") + 1] == MODEL_DIR


def test_the_longest_name_the_crd_allows_is_admitted_by_kserve_and_one_more_character_is_refused(
        kserve_cluster: KServeCluster, kserve_namespace: str) -> None:
    cluster = kserve_cluster.cluster
    name = "m" * 40  # the CRD's own limit on metadata.name
    version = "v" + "1" * (NAME_AND_VERSION_LIMIT - len(name) - 1)

    def vssmodel(version: str) -> dict[str, Any]:
        return {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
                "metadata": {"name": name, "namespace": kserve_namespace},
                "spec": {"task": "classification", "version": version,
                         "versions": [{"name": version, "storageUri": "pvc://vss-models/classifier.onnx"}]}}

    manifest = vssmodel(version)
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    isvc = _isvcs(VSSModel.model_validate(manifest))[0]
    # Admitted by KServe's defaulting and validating webhooks; the label KServe puts on its Pods, the tightest
    # of its names, is exactly 63 characters (its Pods start: tests/integration/test_kserve_e2e.py).
    created = _create(cluster, isvc)
    assert len(f"isvc.{created['metadata']['name']}-predictor") == 63

    too_long = vssmodel(version + "1")
    with pytest.raises(CommandError) as refused:
        cluster.kubectl("create", "-f", "-", input=json.dumps(too_long))
    assert NAME_BUDGET_MESSAGE in refused.value.stderr


def test_a_name_with_a_leading_digit_is_refused_by_the_crd_as_kserve_would_refuse_its_inferenceservice(
        kserve_cluster: KServeCluster, kserve_namespace: str) -> None:
    cluster = kserve_cluster.cluster
    manifest = {
        "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
        "metadata": {"name": "7eleven", "namespace": kserve_namespace},
        "spec": {"task": "classification", "version": "v1",
                 "versions": [{"name": "v1", "storageUri": "pvc://vss-models/classifier.onnx"}]},
    }
    with pytest.raises(CommandError) as ours:
        cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    assert "metadata.name must start with a lowercase letter" in ours.value.stderr
    # KServe's validating webhook refuses the InferenceService such a name would have given.
    seven = {**manifest, "metadata": {"name": "seven", "namespace": kserve_namespace}}
    isvc = _isvcs(VSSModel.model_validate(seven))[0]
    isvc["metadata"]["name"] = "7eleven-v1"
    with pytest.raises(CommandError) as theirs:
        _create(cluster, isvc)
    assert "admission webhook" in theirs.value.stderr and "7eleven-v1" in theirs.value.stderr


def test_kserve_admits_the_serverless_inferenceservice_once_knative_serving_crds_are_installed(
        kserve_cluster: KServeCluster, kserve_namespace: str) -> None:
    """Only admission is checked: no Knative controller runs, so the Knative Service KServe would create and
    its revisions, routes and readiness stay unverified."""
    cluster = kserve_cluster.cluster
    crd_dir = module_dir(KNATIVE_SERVING_MODULE, KNATIVE_SERVING_VERSION) / "config" / "core" / "300-resources"
    cluster.install_crds(sorted(crd_dir.glob("*.yaml")))
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["metadata"]["namespace"] = kserve_namespace
    doc["spec"]["rollout"] = {"trafficRouter": "knative"}
    isvc = _isvcs(VSSModel.model_validate(doc))[0]
    created = _create(cluster, isvc)
    assert created["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
