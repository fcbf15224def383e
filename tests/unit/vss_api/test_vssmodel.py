"""The VSSModel schema's `spec.networkPolicy`: on by default, peers that name someone, selectors whose values fit
their operator (the CRD's CEL twins are tested on the apiserver in tests/integration/test_vssmodel_validation.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from vss_api.vssmodel import PEER_MESSAGE, SELECTOR_VALUES_MESSAGE, VSSModel


def _model(network_policy: dict[str, Any] | None = None) -> VSSModel:
    spec: dict[str, Any] = {"task": "detection", "version": "v1",
                            "versions": [{"name": "v1", "storageUri": "s3://models/yolo/v1.onnx"}]}
    if network_policy is not None:
        spec["networkPolicy"] = network_policy
    return VSSModel.model_validate({"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
                                    "metadata": {"name": "yolo"}, "spec": spec})


def test_the_network_policy_is_on_by_default_with_no_peers_of_its_own() -> None:
    settings = _model().spec.network_policy

    assert settings.enabled is True
    assert settings.ingress_from is None and settings.metrics_from is None


def test_peers_read_namespace_and_pod_selectors_in_kubernetes_spelling() -> None:
    settings = _model({"ingressFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kserve"}},
         "podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["debug"]}]}},
        {"namespaceSelector": {}}]}).spec.network_policy

    assert settings.ingress_from is not None
    first, everywhere = settings.ingress_from
    assert first.namespace_selector is not None and first.pod_selector is not None
    assert first.namespace_selector.match_labels == {"kubernetes.io/metadata.name": "kserve"}
    assert first.pod_selector.match_expressions[0].values == ["debug"]
    assert everywhere.namespace_selector is not None and everywhere.pod_selector is None


@pytest.mark.parametrize(("settings", "message"), [
    ({"ingressFrom": [{}]}, PEER_MESSAGE),
    ({"metricsFrom": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}]},
     SELECTOR_VALUES_MESSAGE),
    ({"metricsFrom": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists",
                                                              "values": ["x"]}]}}]}, SELECTOR_VALUES_MESSAGE),
    ({"ingressFrom": []}, "at least 1 item"),
    ({"ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}, "Extra inputs are not permitted"),
    ({"enabled": "sometimes"}, "valid boolean"),
], ids=["empty-peer", "in-without-values", "exists-with-values", "no-peers", "unknown-peer-field", "not-a-bool"])
def test_network_policy_settings_that_name_no_one_or_mismatch_their_operator_are_refused(
        settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _model(settings)

    assert message in str(refused.value)


def test_openvino_is_refused_on_a_gpu_and_bf16_without_openvino() -> None:
    base = {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel", "metadata": {"name": "m"},
            "spec": {"task": "detection", "version": "v1", "versions": [{"name": "v1", "storageUri": "s3://m"}]}}

    def with_predictor(**predictor: str) -> dict[str, object]:
        return {**base, "spec": {**base["spec"], "predictor": predictor}}  # type: ignore[dict-item]

    with pytest.raises(ValidationError, match="runs on the CPU only"):
        VSSModel.model_validate(with_predictor(device="gpu", runtime="openvino"))
    with pytest.raises(ValidationError, match=r"bf16 needs predictor\.runtime openvino"):
        VSSModel.model_validate(with_predictor(precision="bf16"))
    ok = VSSModel.model_validate(with_predictor(runtime="openvino", precision="bf16"))
    assert (ok.spec.predictor.runtime.value, ok.spec.predictor.precision.value) == ("openvino", "bf16")
    assert VSSModel.model_validate(base).spec.predictor.runtime.value == "auto"
