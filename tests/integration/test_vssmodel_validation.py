"""The apiserver refuses invalid VSSModels with the CRD's schema and CEL messages, and pydantic (what
`vss run` and the operator read) refuses the same ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.support.apiserver import LocalCluster
from vss_api.vssmodel import VSSModel

VALID: dict[str, Any] = {
    "apiVersion": "serving.vss.ai/v1alpha1",
    "kind": "VSSModel",
    "metadata": {"name": "yolo"},
    "spec": {
        "task": "detection",
        "version": "v1",
        "versions": [{"name": "v1", "storageUri": "s3://models/yolo/v1/model.onnx"}],
    },
}

V2 = {"name": "v2", "storageUri": "s3://models/yolo/v2/model.onnx"}

# (id, change to the valid spec, words the apiserver's error must contain)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("version-not-in-versions", {"version": "v9"}, "spec.version must name an entry of spec.versions"),
    ("other-task-block", {"transformer": {"classification": {"topK": 3}}},
     "spec.transformer.classification is set but spec.task is not classification"),
    ("steps-falling", {"rollout": {"steps": [{"weight": 50}, {"weight": 10}]}},
     "rollout.steps weights must rise strictly from step to step"),
    ("steps-repeated", {"rollout": {"steps": [{"weight": 20}, {"weight": 20}]}},
     "rollout.steps weights must rise strictly from step to step"),
    ("step-at-100", {"rollout": {"steps": [{"weight": 100}]}}, "should be less than or equal to 99"),
    ("duplicate-versions", {"versions": [VALID["spec"]["versions"][0], VALID["spec"]["versions"][0]]},
     "Duplicate value"),
    ("unknown-task", {"task": "segmentation"}, 'supported values: "detection", "classification"'),
    ("version-not-a-dns-label", {"version": "V_1", "versions": [{"name": "V_1", "storageUri": "s3://x"}]},
     "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"),
    ("replicas-inverted", {"predictor": {"minReplicas": 4, "maxReplicas": 2}},
     "predictor.maxReplicas must be >= predictor.minReplicas"),
    ("unknown-device", {"predictor": {"device": "tpu"}}, 'supported values: "cpu", "gpu"'),
    ("openvino-on-gpu", {"predictor": {"device": "gpu", "runtime": "openvino"}},
     "predictor.runtime openvino runs on the CPU only"),
    ("bf16-without-openvino", {"predictor": {"precision": "bf16"}},
     "predictor.precision bf16 needs predictor.runtime openvino"),
    ("unknown-runtime", {"predictor": {"runtime": "tensorflow"}},
     'supported values: "auto", "onnxruntime", "openvino"'),
    ("input-size-not-stride-multiple", {"transformer": {"detection": {"inputSize": 650}}},
     "should be a multiple of 32"),
    ("bad-duration", {"rollout": {"steps": [{"weight": 10, "pause": "2 minutes"}]}},
     "should match '^([0-9]+(ms|s|m|h))+$'"),
    ("no-versions", {"versions": []}, "should have at least 1 items"),
    ("empty-storage-uri", {"versions": [{"name": "v1", "storageUri": ""}]}, "should be at least 1 chars long"),
    ("threshold-above-one", {"transformer": {"detection": {"confidenceThreshold": 1.5}}},
     "should be less than or equal to 1"),
    ("unknown-field", {"replicas": 3}, 'unknown field "spec.replicas"'),
    ("zero-std", {"task": "classification", "transformer": {"classification": {"std": [0.2, 0.0, 0.2]}}},
     "classification.std values must be > 0"),
    ("unknown-format", {"versions": [{"name": "v1", "storageUri": "s3://x", "format": "pickle"}]},
     'supported values: "onnx", "torchscript"'),
    ("network-peer-naming-no-one", {"networkPolicy": {"ingressFrom": [{}]}},
     "a peer needs a namespaceSelector, a podSelector or both"),
    ("selector-in-without-values", {"networkPolicy": {"metricsFrom": [{"namespaceSelector": {
        "matchExpressions": [{"key": "team", "operator": "In"}]}}]}},
     "operator In and NotIn need values; Exists and DoesNotExist take none"),
    ("selector-exists-with-values", {"networkPolicy": {"ingressFrom": [{"podSelector": {
        "matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}}]}},
     "operator In and NotIn need values; Exists and DoesNotExist take none"),
    ("selector-unknown-operator", {"networkPolicy": {"ingressFrom": [{"podSelector": {
        "matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}}]}},
     'supported values: "In", "NotIn", "Exists", "DoesNotExist"'),
    ("network-peers-empty", {"networkPolicy": {"ingressFrom": []}}, "should have at least 1 items"),
]


def _variant(change: dict[str, Any], name: str) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    doc["metadata"]["name"] = name
    doc["spec"].update(change)
    return doc


def test_the_valid_base_spec_is_accepted(k8s_cluster: LocalCluster, k8s_namespace: str) -> None:
    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "--dry-run=server", "-f", "-",
                        input=yaml.safe_dump(VALID))
    VSSModel.model_validate(VALID)


def test_a_name_too_long_for_child_names_is_refused(k8s_cluster: LocalCluster, k8s_namespace: str) -> None:
    doc = _variant({}, "a" * 41)

    result = k8s_cluster.kubectl("apply", "-n", k8s_namespace, "--dry-run=server", "-f", "-",
                                 input=yaml.safe_dump(doc), check=False)

    assert result.returncode != 0
    assert "metadata.name must be a DNS label of at most 40 characters" in result.stderr


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_vssmodel_is_refused_by_the_apiserver_with_a_readable_message(
    k8s_cluster: LocalCluster, k8s_namespace: str, change: dict[str, Any], message: str,
) -> None:
    doc = _variant(change, "bad")

    result = k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=yaml.safe_dump(doc),
                                 check=False)

    assert result.returncode != 0, f"accepted: {doc['spec']}"
    assert message in result.stderr, result.stderr
    with pytest.raises(ValidationError):
        VSSModel.model_validate(doc)
