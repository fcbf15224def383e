"""The transformer checks a request's parameters before it parses, decodes or calls the predictor: a bad one is a
client error (400) that never reaches the model."""

from __future__ import annotations

import asyncio
import threading
import time
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


class SlowParse(DetectionTask):
    """A detection task whose parsing blocks until the test lets it go, and says which thread it ran on."""

    def __init__(self) -> None:
        super().__init__(DetectionParams())
        self.started, self.release = threading.Event(), threading.Event()
        self.thread: int | None = None
        self.released_in_time = False

    def parse_v2(self, request: InferRequest) -> Any:
        self.thread = threading.get_ident()
        self.started.set()
        self.released_in_time = self.release.wait(timeout=10)
        raise InvalidRequest("parsed")


async def test_a_request_is_parsed_off_the_event_loop_so_the_loop_serves_others_meanwhile() -> None:
    """A v1 series is checked number by number: done on the event loop, a large body would hold up every health
    probe and request behind it. Here the loop itself must let the parse go on while it runs."""
    task = SlowParse()
    model = TransformerModel("cells", "v1", task, cast(Any, NoPredictor()), ServingMetrics.create(CollectorRegistry()))
    request = InferRequest("cells", [InferInput("image", [1], "BYTES", data=[b"x"])])
    pending = asyncio.ensure_future(model.predict(request))
    deadline = time.monotonic() + 10
    while not task.started.is_set():  # the loop runs this while the parse blocks, or never gets here in time
        assert time.monotonic() < deadline, "the parse never started"
        await asyncio.sleep(0.01)
    task.release.set()
    with pytest.raises(InvalidRequest, match="parsed"):
        await pending
    assert task.released_in_time, "the parse held the event loop"
    assert task.thread != threading.get_ident()
