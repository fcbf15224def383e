"""A request's deadline from its `timeout` parameter (Triton's, microseconds), its gRPC deadline and the
process's default: the earliest wins, and a malformed timeout is the caller's mistake (400)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from vss_api.deadlines import (
    current_deadline,
    deadline_at,
    earliest,
    grpc_parameters,
    timeout_parameter_s,
)
from vss_api.errors import InvalidRequest


def test_the_timeout_parameter_is_read_in_microseconds() -> None:
    assert timeout_parameter_s({"timeout": 250_000}) == 0.25
    assert timeout_parameter_s({"other": 1}) is None
    assert timeout_parameter_s(None) is None


@pytest.mark.parametrize("value", [0, -5, 1.5, "100", True, 3600 * 1_000_000 + 1, [1]])
def test_a_timeout_that_is_not_a_positive_whole_number_of_microseconds_is_the_callers_mistake(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="parameter 'timeout' must be a whole number of microseconds"):
        timeout_parameter_s({"timeout": value})


def test_grpc_parameters_are_read_as_plain_values_as_tritonclient_sends_them() -> None:
    request = pb.ModelInferRequest()
    request.parameters["timeout"].int64_param = 5000
    request.parameters["name"].string_param = "x"
    request.parameters["empty"].CopyFrom(pb.InferParameter())

    plain = grpc_parameters(request.parameters)

    assert plain == {"timeout": 5000, "name": "x", "empty": None}
    assert timeout_parameter_s(plain) == 0.005


def test_the_shortest_timeout_sets_the_deadline() -> None:
    assert earliest(2.0, None, 0.5, now=100.0) == 100.5
    assert earliest(None, None, now=100.0) is None


def test_a_callers_deadline_wins_over_a_later_default_and_a_sooner_default_wins_over_it() -> None:
    with deadline_at(105.0):
        assert current_deadline(30.0, now=100.0) == 105.0
        assert current_deadline(1.0, now=100.0) == 101.0
        assert current_deadline(now=100.0) == 105.0
    assert current_deadline(30.0, now=100.0) == 130.0
    assert current_deadline(now=100.0) is None


def test_an_inner_deadline_cannot_extend_an_outer_one() -> None:
    with deadline_at(105.0):
        with deadline_at(200.0):
            assert current_deadline(now=100.0) == 105.0
        with deadline_at(102.0):
            assert current_deadline(now=100.0) == 102.0
        assert current_deadline(now=100.0) == 105.0


async def test_each_request_task_sees_only_its_own_deadline() -> None:
    async def serve(deadline: float, seen: asyncio.Event, go: asyncio.Event) -> float | None:
        with deadline_at(deadline):
            seen.set()
            await go.wait()  # both requests are inside their deadlines at once
            return current_deadline(now=0.0)

    go = asyncio.Event()
    seen = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(serve(d, e, go)) for d, e in zip((10.0, 20.0), seen, strict=True)]
    for event in seen:
        await event.wait()
    go.set()
    assert await asyncio.gather(*tasks) == [10.0, 20.0]


@pytest.mark.parametrize("parameters", [[1], "timeout", 5])
def test_request_parameters_that_are_not_an_object_are_the_callers_mistake_not_a_500(parameters: Any) -> None:
    with pytest.raises(InvalidRequest, match="request parameters must be an object of name: value"):
        timeout_parameter_s(parameters)
