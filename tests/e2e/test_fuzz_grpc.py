"""Hypothesis-generated gRPC `ModelInferRequest`s (KServe's grpc_predict_v2 protos) against the real `vss run`
detector and classifier (tests.e2e.fuzz_tensors: random model names and versions, input names, datatypes, shapes
negative, huge or at odds with the contents, raw contents whose lengths lie, parameters of every kind). Each call
has a deadline and must end OK or with a status that names the caller's mistake or a passing condition, never
INTERNAL or UNKNOWN; afterwards a good request on the same channel succeeds.

Sizes: VSS_FUZZ_SCALE unset (CI) sends GRPC_EXAMPLES[ci] requests per model, VSS_FUZZ_SCALE=nightly
GRPC_EXAMPLES[nightly]; derandomized, so CI reproduces what it finds. The calls sent and the statuses seen are
printed at the end (and appended to the file VSS_FUZZ_REPORT names, if set; docs: README, Fuzzing)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

from tests.e2e.conftest import SERIES_WINDOWS, jpeg, scene
from tests.e2e.fuzz_tally import FuzzTally
from tests.e2e.fuzz_tensors import as_grpc, requests
from tests.e2e.serving import Served

GRPC_EXAMPLES = {"ci": 300, "nightly": 5000}
SCALE = os.environ.get("VSS_FUZZ_SCALE", "ci")
DEADLINE_S = 30.0
SERVED = ("detector", "classifier", "anomaly", "forecaster")
VERSION = "v1"
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
           grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED}
MAX_MESSAGE = 64 * 1024 * 1024


def examples() -> int:
    if SCALE not in GRPC_EXAMPLES:
        raise ValueError(f"VSS_FUZZ_SCALE must be one of {sorted(GRPC_EXAMPLES)}, got {SCALE!r}")
    return GRPC_EXAMPLES[SCALE]


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[FuzzTally]:
    tally = FuzzTally("gRPC", examples=examples(), scale=SCALE)
    yield tally
    tally.report(request.config)


def good_request(served: Served) -> pb.ModelInferRequest:
    if served.name in SERIES_WINDOWS:
        readings, features = SERIES_WINDOWS[served.name]
        return pb.ModelInferRequest(model_name=served.name, inputs=[pb.ModelInferRequest.InferInputTensor(
            name="series", datatype="FP32", shape=[1, readings, features],
            contents=pb.InferTensorContents(fp32_contents=[0.0] * (readings * features)))])
    data = jpeg(scene())
    return pb.ModelInferRequest(model_name=served.name, inputs=[pb.ModelInferRequest.InferInputTensor(
        name="image", datatype="BYTES", shape=[1], contents=pb.InferTensorContents(bytes_contents=[data]))])


@pytest.mark.parametrize("fixture", SERVED)
def test_every_fuzzed_model_infer_ends_ok_or_with_a_callers_status_in_time_never_internal(
        request: pytest.FixtureRequest, tally: FuzzTally, fixture: str) -> None:
    served: Served = request.getfixturevalue(fixture)
    row = f"ModelInfer ({served.name})"
    channel = grpc.insecure_channel(served.grpc_url, options=[("grpc.max_send_message_length", MAX_MESSAGE),
                                                               ("grpc.max_receive_message_length", MAX_MESSAGE)])
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)

    @settings(max_examples=examples(), derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])  # a gRPC round trip each
    @given(generated=requests(served.name, VERSION))
    def fuzz(generated: object) -> None:
        message = as_grpc(generated)  # type: ignore[arg-type]
        started = time.monotonic()
        try:
            stub.ModelInfer(message, timeout=DEADLINE_S)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
        # DEADLINE_EXCEEDED from the server (a `timeout` parameter of a microsecond) is an answer; ours, a hang
        hung = code is grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started >= DEADLINE_S * 0.9
        if hung:
            tally.hang(row)
        else:
            tally.answered(row, code.name, server_error=code not in ALLOWED)
        assert code in ALLOWED, f"{code.name}: {details}\n{message}"[:3000]
        assert not hung, f"no answer within {DEADLINE_S}s to:\n{message}"[:3000]

    try:
        fuzz()
        reply = stub.ModelInfer(good_request(served), timeout=DEADLINE_S)
        assert reply.outputs, reply
    finally:
        channel.close()
