import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import numpy as np
import pytest
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import InvalidInput, ModelNotFound
from starlette.exceptions import HTTPException

from vss_api.errors import Overloaded, RequestTimeout
from vss_api.server import (
    BodyIdleTimeout,
    BodySizeLimit,
    ConcurrencyLimit,
    grpc_status_error_handler,
    http_exception_handler,
    install_routes,
    json_response,
    parse_v2_rest_request,
)


def _binary_request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


def test_binary_tensors_stay_bytes_and_decode_to_the_sent_array() -> None:
    pixels = np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3)
    jpeg_like = b"\xff\xd8\xff\xe0 not utf-8 \xfe"
    body, n = _binary_request({"inputs": [
        {"name": "pixels", "shape": [1, 2, 4, 3], "datatype": "UINT8",
         "parameters": {"binary_data_size": pixels.nbytes}},
        {"name": "image", "shape": [1], "datatype": "BYTES",
         "parameters": {"binary_data_size": 4 + len(jpeg_like)}}]},
        pixels.tobytes(), len(jpeg_like).to_bytes(4, "little") + jpeg_like)
    request = parse_v2_rest_request(body, n, "m")
    np.testing.assert_array_equal(request.inputs[0].as_numpy(), pixels)
    assert request.inputs[1].as_numpy()[0] == jpeg_like


def test_plain_json_tensors_are_read_too() -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}]}).encode()
    request = parse_v2_rest_request(body, None, "m")
    np.testing.assert_array_equal(request.inputs[0].as_numpy(), np.array([1.5, 2.5], np.float32))


@pytest.mark.parametrize(("header", "blob", "n_override", "message"), [
    ({"inputs": "x"}, b"", None, "'inputs' list"),
    ({"inputs": [{"name": "x"}]}, b"", None, "needs 'name', 'shape' and 'datatype'"),
    ({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}, b"", None, "non-negative"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, b"", None, "neither 'data'"),
    ({"inputs": [{"name": "x", "shape": [4], "datatype": "UINT8", "parameters": {"binary_data_size": 9}}]},
     b"1234", None, "runs past the body"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "UINT8", "parameters": {"binary_data_size": 2}}]},
     b"1234", None, "not claimed"),
    ({"inputs": []}, b"", 10**6, "body has only"),
])
def test_malformed_requests_are_invalid_input_naming_the_problem(
        header: dict[str, Any], blob: bytes, n_override: int | None, message: str) -> None:
    body, n = _binary_request(header, blob)
    with pytest.raises(InvalidInput, match=message):
        parse_v2_rest_request(body, n_override or n, "m")


def test_a_body_that_is_not_json_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_v2_rest_request(b"{nope", None, "m")


async def _call(app_body: bytes, declared: bool, limit: int) -> tuple[int, bytes]:
    sent: list[MutableMapping[str, Any]] = []
    chunks = [app_body[i:i + 100] for i in range(0, len(app_body), 100)] or [b""]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> MutableMapping[str, Any]:
        return queue.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-length", str(len(app_body)).encode())] if declared else []
    await BodySizeLimit(app, limit)({"type": "http", "headers": headers}, receive, send)
    return sent[0]["status"], sent[1]["body"]


async def test_a_declared_oversized_body_gets_413_before_it_is_read() -> None:
    status, body = await _call(b"x" * 1000, declared=True, limit=500)
    assert status == 413 and b"limit of 500 bytes" in body


async def test_a_declared_body_far_over_the_limit_is_refused_without_reading_it() -> None:
    status, _ = await _call(b"x" * 20_000, declared=True, limit=500)
    assert status == 413


async def test_a_streamed_body_that_grows_past_the_limit_gets_413() -> None:
    status, _ = await _call(b"x" * 1000, declared=False, limit=500)
    assert status == 413


async def test_a_body_under_the_limit_passes_through() -> None:
    status, body = await asyncio.wait_for(_call(b"x" * 100, declared=True, limit=500), 1)
    assert (status, body) == (200, b"ok")


class HeldApp:
    """An ASGI app that holds each request until `release` is set: requests in flight, as many as we send."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _request(app: Any, method: str, path: str) -> list[MutableMapping[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    return sent


async def test_a_request_over_the_concurrency_limit_gets_503_with_retry_after_at_once() -> None:
    held = HeldApp()
    limited = ConcurrencyLimit(held, limit=2)
    in_flight = [asyncio.create_task(_request(limited, "POST", "/v2/models/m/infer")) for _ in range(2)]
    await _until_entered(held, 2)

    refused = await asyncio.wait_for(_request(limited, "POST", "/v2/models/m/infer"), 5)
    held.release.set()
    answered = await asyncio.gather(*in_flight)

    start = refused[0]
    assert start["status"] == 503 and (b"retry-after", b"1") in start["headers"]
    assert b"limit of 2 requests" in refused[1]["body"]
    assert [a[0]["status"] for a in answered] == [200, 200]
    assert held.entered == 2 and limited.active == 0


async def test_health_probes_are_answered_while_the_server_is_at_its_limit() -> None:
    held = HeldApp()
    limited = ConcurrencyLimit(held, limit=1)
    busy = asyncio.create_task(_request(limited, "POST", "/v2/models/m/infer"))
    await _until_entered(held, 1)

    probes = [asyncio.create_task(_request(limited, "GET", path))
              for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/m/ready", "/metrics")]
    await _until_entered(held, 5)  # each probe reached the app: none was refused
    held.release.set()
    answers = await asyncio.gather(busy, *probes)

    assert [a[0]["status"] for a in answers] == [200] * 5


async def test_a_slot_freed_by_a_finished_request_is_taken_by_the_next() -> None:
    held = HeldApp()
    held.release.set()
    limited = ConcurrencyLimit(held, limit=1)
    statuses = [(await _request(limited, "POST", "/v2/models/m/infer"))[0]["status"] for _ in range(3)]
    assert statuses == [200, 200, 200]


async def _until_entered(app: HeldApp, count: int) -> None:
    end = asyncio.get_running_loop().time() + 5
    while app.entered < count:
        assert asyncio.get_running_loop().time() < end, f"only {app.entered} of {count} requests reached the app"
        await asyncio.sleep(0.001)


async def test_every_503_tells_the_client_when_to_retry_and_other_errors_do_not() -> None:
    unavailable = await grpc_status_error_handler(None, Overloaded("the queue is full"))  # type: ignore[arg-type]
    timeout = await grpc_status_error_handler(None, RequestTimeout("too late"))  # type: ignore[arg-type]

    assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "1"
    assert b"queue is full" in bytes(unavailable.body)
    assert timeout.status_code == 504 and "retry-after" not in timeout.headers


async def _stalling_call(idle_s: float, chunks: list[bytes]) -> list[MutableMapping[str, Any]]:
    """A client that sends `chunks` of a longer body, then nothing."""
    sent: list[MutableMapping[str, Any]] = []
    queue = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> MutableMapping[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()  # the client went quiet
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await BodyIdleTimeout(app, idle_s)({"type": "http", "headers": []}, receive, send)
    return sent


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_is_closed() -> None:
    sent = await asyncio.wait_for(_stalling_call(0.05, [b"x" * 10, b"y" * 10]), 5)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"stopped arriving for 0.05 s" in sent[1]["body"]


async def test_a_body_that_keeps_arriving_is_not_timed_out_and_a_finished_one_waits_freely() -> None:
    sent: list[MutableMapping[str, Any]] = []
    queue = [{"type": "http.request", "body": b"x", "more_body": i < 4} for i in range(5)]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        disconnect = asyncio.ensure_future(receive())  # as a streaming response listens for the client leaving
        await asyncio.sleep(0.1)  # longer than the idle timeout, after the body
        assert not disconnect.done()
        disconnect.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> MutableMapping[str, Any]:
        if queue:
            await asyncio.sleep(0.01)
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(BodyIdleTimeout(app, 0.05)({"type": "http", "headers": []}, receive, send), 5)
    assert sent[0]["status"] == 200


async def test_starlettes_404_and_405_answer_in_the_error_shape_of_every_other_answer() -> None:
    response = await http_exception_handler(None, HTTPException(405, headers={"Allow": "GET"}))  # type: ignore[arg-type]
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert json.loads(bytes(response.body)) == {"error": "Method Not Allowed"}


class _Versioned:
    version = "v3"


class _Registry:
    def get_model(self, name: str) -> object | None:
        return _Versioned() if name == "m" else None


class _DataPlane:
    model_registry = _Registry()

    async def model_metadata(self, name: str) -> dict[str, Any]:
        return {"name": name, "platform": "", "inputs": [], "outputs": []}

    async def model_ready(self, name: str) -> bool:
        return True


def _versioned_app() -> Any:
    import httpx
    from fastapi import FastAPI

    app = FastAPI()
    install_routes(app, _DataPlane(), {})  # type: ignore[arg-type]
    app.add_exception_handler(GrpcException, grpc_status_error_handler)
    app.add_exception_handler(ModelNotFound, lambda _, exc: json_response({"error": str(exc)}, 404))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_the_served_version_answers_by_name_and_any_other_version_is_404_naming_the_served_one() -> None:
    async with _versioned_app() as client:
        assert (await client.get("/v2/models/m/versions/v3")).json()["versions"] == ["v3"]
        assert (await client.get("/v2/models/m/versions/v3/ready")).json() == {"name": "m", "ready": True}
        for path, method in (("/v2/models/m/versions/v1", "GET"), ("/v2/models/m/versions/v1/ready", "GET"),
                             ("/v2/models/m/versions/v1/infer", "POST")):
            reply = await client.request(method, path, content=b'{"inputs": []}')
            assert reply.status_code == 404, reply.text
            assert reply.json() == {"error": "model 'm' has no version 'v1' here: it serves version 'v3'"}
        assert (await client.get("/v2/models/other/versions/v3")).status_code == 404


def test_the_collector_waits_while_large_json_requests_are_alive_and_runs_again_after_the_last() -> None:
    import gc

    from vss_api.server import PARSE_OFF_LOOP_BYTES, JsonParsing

    parsing = JsonParsing()
    assert gc.isenabled()
    with parsing.request(PARSE_OFF_LOOP_BYTES):  # small: nothing changes
        assert gc.isenabled()
    try:
        with parsing.request(PARSE_OFF_LOOP_BYTES + 1):
            assert not gc.isenabled()
            with parsing.request(PARSE_OFF_LOOP_BYTES + 1):
                assert not gc.isenabled()
            assert not gc.isenabled(), "re-enabled while a large request was still alive"
        assert gc.isenabled()
        with pytest.raises(RuntimeError), parsing.request(PARSE_OFF_LOOP_BYTES + 1):
            raise RuntimeError("a failed request")
        assert gc.isenabled()
    finally:
        gc.enable()
