"""kube: the only module that talks to the Kubernetes API; paths and error mapping."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from vss_operator import kube
from vss_operator.kube import Conflict, Forbidden, NotFound, Rejected, Unavailable, resource_path


@pytest.mark.parametrize(("args", "path"), [
    (("serving.kserve.io/v1beta1", "InferenceService", "vision", "yolo-v1"),
     "/apis/serving.kserve.io/v1beta1/namespaces/vision/inferenceservices/yolo-v1"),
    (("gateway.networking.k8s.io/v1", "HTTPRoute", "vision", None),
     "/apis/gateway.networking.k8s.io/v1/namespaces/vision/httproutes"),
    (("coordination.k8s.io/v1", "Lease", "ops", "vss-operator"),
     "/apis/coordination.k8s.io/v1/namespaces/ops/leases/vss-operator"),
])
def test_resource_paths_address_namespaced_objects(args: tuple[str, str, str, str | None], path: str) -> None:
    assert resource_path(*args) == path


def test_status_subresource_path() -> None:
    assert resource_path("serving.vss.ai/v1alpha1", "VSSModel", "vision", "yolo", "status") == (
        "/apis/serving.vss.ai/v1alpha1/namespaces/vision/vssmodels/yolo/status")


@pytest.mark.parametrize(("status", "error"), [
    (404, NotFound), (409, Conflict), (422, Rejected), (400, Rejected), (403, Forbidden),
    (429, Unavailable), (500, Unavailable), (503, Unavailable),
])
def test_api_errors_map_to_what_a_handler_should_do(status: int, error: type[Exception]) -> None:
    mapped = kube._error(ApiException(status=status, reason="r", body='{"message": "the reason"}'))

    assert type(mapped) is error
    assert str(mapped) == "the reason"
    assert mapped.status == status
