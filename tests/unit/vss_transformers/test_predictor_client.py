"""The transformer's gRPC client against a stand-in predictor on loopback: what crosses the hop (request id,
trace context) and how the channel is closed."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)
from prometheus_client import CollectorRegistry

from vss_api.request_context import RequestContext
from vss_api.serving_metrics import ServingMetrics
from vss_api.vssmodel import DetectionParams
from vss_transformers.errors import PredictorUnavailable
from vss_transformers.model import TransformerModel
from vss_transformers.predictor_client import PredictorClient
from vss_transformers.tasks import DetectionTask

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class StandIn(GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Doubles `x`, remembers what each call carried, echoes the trace headers as initial metadata; a call
    waits for `release` while `hold` is set."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.hold = False
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        metadata = {m.key: m.value for m in context.invocation_metadata()}
        self.seen.append((request.id, metadata))
        self.arrived.set()
        if self.hold:
            await self.release.wait()
        await context.send_initial_metadata(
            tuple((k, v) for k, v in metadata.items() if k in ("traceparent", "tracestate")))
        x = np.frombuffer(request.raw_input_contents[0], np.float32) * 2
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        response.outputs.add(name="y", datatype="FP32", shape=[1, x.size])
        response.raw_output_contents.append(x.tobytes())
        return response


@pytest.fixture
async def predictor() -> AsyncIterator[tuple[StandIn, str]]:
    server = grpc.aio.server()
    stand_in = StandIn()
    add_GRPCInferenceServiceServicer_to_server(stand_in, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield stand_in, f"127.0.0.1:{port}"
    await server.stop(grace=None)


def _client(target: str) -> PredictorClient:
    return PredictorClient(model_name="m", grpc_target=target, rest_base="http://unused", timeout_s=5.0,
                           max_message_bytes=1 << 20)


FEEDS = {"x": np.ones((1, 3), np.float32)}


async def test_the_request_id_and_trace_context_reach_the_predictor_and_its_echo_comes_back(
        predictor: tuple[StandIn, str]) -> None:
    stand_in, target = predictor
    client = _client(target)
    context = RequestContext.from_headers({"traceparent": TRACEPARENT, "tracestate": "a=b"}, body_id="req-9")
    outputs, echoed = await client.infer(FEEDS, context)
    await client.aclose()
    np.testing.assert_array_equal(outputs["y"], np.full((1, 3), 2.0, np.float32))
    ((request_id, metadata),) = stand_in.seen
    assert request_id == "req-9"
    assert metadata["x-request-id"] == "req-9" and metadata["traceparent"] == TRACEPARENT
    assert metadata["tracestate"] == "a=b"
    assert echoed == {"traceparent": TRACEPARENT, "tracestate": "a=b"}


async def test_a_call_in_flight_when_the_client_closes_still_gets_its_answer_and_later_calls_are_refused(
        predictor: tuple[StandIn, str]) -> None:
    stand_in, target = predictor
    client = _client(target)
    stand_in.hold = True
    in_flight = asyncio.create_task(client.infer(FEEDS, RequestContext("in-flight")))
    await asyncio.wait_for(stand_in.arrived.wait(), 5)
    client.close()  # as TransformerModel.stop() does: at once, the channel's own close runs as a task
    with pytest.raises(PredictorUnavailable, match="shutting down"):
        await client.infer(FEEDS, RequestContext("too-late"))
    stand_in.release.set()
    outputs, _ = await asyncio.wait_for(in_flight, 5)
    await asyncio.wait_for(client.aclose(), 5)
    np.testing.assert_array_equal(outputs["y"], np.full((1, 3), 2.0, np.float32))
    assert [request_id for request_id, _ in stand_in.seen] == ["in-flight"]


async def test_stopping_the_transformer_model_closes_its_channel_to_the_predictor(
        predictor: tuple[StandIn, str], caplog: pytest.LogCaptureFixture) -> None:
    _, target = predictor
    client = _client(target)
    await client.infer(FEEDS)
    model = TransformerModel("m", "v1", DetectionTask(DetectionParams()), client,
                             ServingMetrics.create(CollectorRegistry()))
    with caplog.at_level(logging.INFO, logger="vss_transformers.model"):
        model.stop()  # as KServe calls it: synchronously, on the serving loop's thread
    await client.aclose()  # waits for the close that stop() started
    assert "model stopped" in [r.getMessage() for r in caplog.records]
    assert not model.ready
    with pytest.raises(PredictorUnavailable):
        await client.infer(FEEDS)
