"""The transformer checks a request's parameters before it parses, decodes or calls the predictor: a bad one is a
client error (400) that never reaches the model."""

from __future__ import annotations

from typing import Any, cast

import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import CollectorRegistry

from vss_api.errors import InvalidRequest
from vss_api.serving_metrics import ServingMetrics
from vss_api.vssmodel import DetectionParams
from vss_transformers.model import TransformerModel
from vss_transformers.tasks import DetectionTask


class NoPredictor:
    def __init__(self) -> None:
        self.calls = 0

    async def infer(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise AssertionError("a request with a bad parameter reached the predictor")


def _model(client: NoPredictor, registry: CollectorRegistry) -> TransformerModel[Any, Any, Any]:
    return TransformerModel("cells", "v1", DetectionTask(DetectionParams(confidence_threshold=0.25)),
                            cast(Any, client), ServingMetrics.create(registry))


@pytest.mark.parametrize(("parameters", "message"), [
    ({"confidenceThreshold": "abc"}, "spec.transformer.detection.confidenceThreshold (0.25 for this model)"),
    ({"binary_data_output": "abc"}, "'binary_data_output' must be true or false, got 'abc'"),
])
async def test_a_bad_parameter_is_a_client_error_that_never_reaches_the_predictor(
        parameters: dict[str, Any], message: str) -> None:
    client, registry = NoPredictor(), CollectorRegistry()
    request = InferRequest("cells", [InferInput("image", [1], "BYTES", data=[b"not even an image"])],
                           parameters=parameters)
    with pytest.raises(InvalidRequest) as caught:
        await _model(client, registry).predict(request)
    assert message in caught.value.reason
    assert client.calls == 0
    assert registry.get_sample_value("inference_requests_total", {
        "model_name": "cells", "version": "v1", "component": "transformer", "status": "client_error"}) == 1


async def test_a_v1_request_with_parameters_is_refused_before_its_instances_are_read() -> None:
    client = NoPredictor()
    payload = {"instances": "not a list", "parameters": {"iou_threshold": 1}}
    with pytest.raises(InvalidRequest, match=r"^v1 request parameter 'iou_threshold' .*iouThreshold"):
        await _model(client, CollectorRegistry()).predict(payload)
    assert client.calls == 0
