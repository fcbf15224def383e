"""A hand-written corpus of hostile requests (the classics of Triton's QA) against real `vss run` processes: bodies
at, under and over the size limit, bodies sent a byte at a time, JSON nested past any parser's depth, binary
extension lengths that lie, shapes that disagree with their data or ask for terabytes, and extreme image strips.
Each asserts the answer AND that the next good request on the same keep-alive connection succeeds (pixels as
JSON outside 0..255 and the other plain caller mistakes are in test_vss_run_bad_input.py)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.e2e.conftest import jpeg, png, scene
from tests.e2e.serving import Served
from vss_api.server import BODY_IDLE_TIMEOUT_S

GOOD = jpeg(scene())
DETECTOR_LIMIT = 4_000_000  # tests/e2e/conftest.py DETECTION_YAML's maxRequestBytes
DEFAULT_LIMIT = 32 * 1024 * 1024  # VSSModel spec.transformer.maxRequestBytes' default: the classifier fixture's
TIMEOUT_S = 60.0


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def binary(inputs: list[tuple[str, str, list[int], bytes]], *, sizes: list[object] | None = None,
           header_length: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A v2 binary-extension body; `sizes` and `header_length` replace the honest binary_data_size values and
    Inference-Header-Content-Length."""
    declared = sizes if sizes is not None else [len(b) for *_, b in inputs]
    head = json.dumps({"inputs": [{"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": size}}
                                  for (n, d, s, _), size in zip(inputs, declared, strict=True)]}).encode()
    return head + b"".join(b for *_, b in inputs), {
        "Inference-Header-Content-Length": str(len(head)) if header_length is None else header_length,
        "Content-Type": "application/octet-stream"}


def image_request(data: bytes) -> tuple[bytes, dict[str, str]]:
    return binary([("image", "BYTES", [1], _bytes_tensor(data))])


def padded_to(total: int) -> tuple[bytes, dict[str, str]]:
    """A good image request of exactly `total` bytes: the JPEG padded after its end marker, which decoders skip."""
    padding = total - len(image_request(GOOD)[0])
    while (length := len(image_request(GOOD + b"\0" * padding)[0])) != total:  # binary_data_size's digits grew
        padding += total - length
    return image_request(GOOD + b"\0" * padding)


def json_request(document: object) -> tuple[bytes, dict[str, str]]:
    return json.dumps(document).encode(), {"Content-Type": "application/json"}


@pytest.fixture
def connection(request: pytest.FixtureRequest) -> Iterator[http.client.HTTPConnection]:
    """One keep-alive connection to the served model the test names (indirect parametrization), Nagle off so a
    byte sent alone goes alone."""
    served: Served = request.getfixturevalue(request.param)
    host, port = served.rest_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.served = served  # type: ignore[attr-defined]
    yield conn
    conn.close()


def _served(conn: http.client.HTTPConnection) -> Served:
    served: Served = conn.served  # type: ignore[attr-defined]
    return served


def send(conn: http.client.HTTPConnection, body: bytes | Iterator[bytes], headers: dict[str, str],
         path: str | None = None) -> tuple[int, dict[str, object] | bytes]:
    served = _served(conn)
    conn.request("POST", path or f"/v2/models/{served.name}/infer", body=body, headers=headers,
                 encode_chunked="Content-Length" not in headers and not isinstance(body, bytes))
    reply = conn.getresponse()
    content = reply.read()
    assert reply.getheader("connection", "").lower() != "close", (reply.status, content[:300])
    try:
        return reply.status, json.loads(content)
    except ValueError:
        return reply.status, content


def error_of(answer: dict[str, object] | bytes) -> str:
    assert isinstance(answer, dict), answer[:300]
    error = answer.get("error")
    assert isinstance(error, str) and error, answer
    return error


def next_good_request_succeeds(conn: http.client.HTTPConnection) -> None:
    status, answer = send(conn, *image_request(GOOD))
    assert status == 200, answer


# --- the size limit -------------------------------------------------------------------------------------

@pytest.mark.parametrize("connection", ["detector"], indirect=True)
@pytest.mark.parametrize("total", [DETECTOR_LIMIT - 3, DETECTOR_LIMIT])
def test_a_body_at_or_just_under_the_configured_limit_is_served(connection: http.client.HTTPConnection,
                                                                total: int) -> None:
    body, headers = padded_to(total)
    assert len(body) == total
    status, answer = send(connection, body, headers)
    assert status == 200, answer
    next_good_request_succeeds(connection)


@pytest.mark.parametrize("connection", ["detector"], indirect=True)
@pytest.mark.parametrize("total", [DETECTOR_LIMIT + 1, DETECTOR_LIMIT + 3])
def test_a_body_just_over_the_configured_limit_is_413_and_the_connection_serves_on(
        connection: http.client.HTTPConnection, total: int) -> None:
    status, answer = send(connection, *padded_to(total))
    assert status == 413
    assert f"limit of {DETECTOR_LIMIT} bytes" in error_of(answer)
    next_good_request_succeeds(connection)


@pytest.mark.parametrize("connection", ["classifier"], indirect=True)
def test_the_default_limit_of_32_mib_serves_a_body_at_it_and_refuses_one_3_bytes_over(
        connection: http.client.HTTPConnection) -> None:
    status, answer = send(connection, *padded_to(DEFAULT_LIMIT))
    assert status == 200, answer
    status, answer = send(connection, *padded_to(DEFAULT_LIMIT + 3))
    assert status == 413
    assert f"limit of {DEFAULT_LIMIT} bytes" in error_of(answer)
    next_good_request_succeeds(connection)


# --- slow bodies --------------------------------------------------------------------------------------

def _one_byte_at_a_time(body: bytes) -> Iterator[bytes]:
    for i in range(len(body)):
        yield body[i:i + 1]


SMALL = jpeg(scene()[::8, ::8].copy())  # 160x90: a few hundred sends, not thousands


@pytest.mark.parametrize("connection", ["detector"], indirect=True)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_sent_one_byte_at_a_time_is_served_in_time(connection: http.client.HTTPConnection,
                                                          framing: str) -> None:
    body, headers = image_request(SMALL)
    if framing == "content-length":
        headers["Content-Length"] = str(len(body))
    started = time.monotonic()
    status, answer = send(connection, _one_byte_at_a_time(body), headers)
    assert status == 200, answer
    assert time.monotonic() - started < TIMEOUT_S
    next_good_request_succeeds(connection)


def test_a_body_that_stops_halfway_is_408_within_the_idle_timeout_and_the_server_serves_on(
        detector: Served) -> None:
    """The connection is closed with the 408 (what is left of the body cannot be told from a next request), so the
    next good request goes on a new one."""
    body, headers = image_request(SMALL)
    host, port = detector.rest_url.split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(body)), "Host": host}.items())
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as raw:
        raw.sendall(f"POST /v2/models/{detector.name}/infer HTTP/1.1\r\n{head}\r\n".encode() + body[:100])
        reply = http.client.HTTPResponse(raw)
        reply.begin()
        answer = json.loads(reply.read())
    assert reply.status == 408, answer
    assert "stopped arriving" in error_of(answer)
    assert reply.getheader("connection", "").lower() == "close"
    assert time.monotonic() - started < BODY_IDLE_TIMEOUT_S + 30  # generous: a loaded 2-core machine
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    conn.served = detector  # type: ignore[attr-defined]
    try:
        next_good_request_succeeds(conn)
    finally:
        conn.close()


# --- JSON past any depth ------------------------------------------------------------------------------

DEPTH = 150_000


@pytest.mark.parametrize("connection", ["detector"], indirect=True)
@pytest.mark.parametrize("where", ["tensor data", "whole body", "v1 instances", "v1 whole body"])
def test_json_nested_150000_deep_is_400_and_the_connection_serves_on(connection: http.client.HTTPConnection,
                                                                     where: str) -> None:
    nested = "[" * DEPTH + "]" * DEPTH
    served = _served(connection)
    path = f"/v1/models/{served.name}:predict" if where.startswith("v1") else None
    body = {
        "tensor data": '{"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": '
                       f'{nested}}}]}}',
        "whole body": nested,
        "v1 instances": f'{{"instances": {nested}}}',
        "v1 whole body": nested,
    }[where]
    status, answer = send(connection, body.encode(), {"Content-Type": "application/json"}, path)
    assert status == 400, answer
    assert "JSON" in error_of(answer) or "request format" in error_of(answer)
    next_good_request_succeeds(connection)


# --- binary extension lengths that lie ------------------------------------------------------------------

PIXELS = bytes(4 * 4 * 3)
LYING = {
    "header length past the body": (binary([("image", "BYTES", [1], _bytes_tensor(GOOD))],
                                           header_length=str(10 ** 9)), "but the body has only"),
    "header length negative": (binary([("image", "BYTES", [1], _bytes_tensor(GOOD))], header_length="-5"),
                               "must be an integer"),
    "header length not a number": (binary([("image", "BYTES", [1], _bytes_tensor(GOOD))], header_length="12abc"),
                                   "must be an integer"),
    "header length zero": (binary([("image", "BYTES", [1], _bytes_tensor(GOOD))], header_length="0"),
                           "not valid JSON"),
    "binary sizes summing past the body": (
        binary([("pixels", "UINT8", [1, 4, 4, 3], PIXELS)], sizes=[len(PIXELS) + 1]), "runs past the body"),
    "binary size negative": (binary([("pixels", "UINT8", [1, 4, 4, 3], PIXELS)], sizes=[-48]), "binary_data_size"),
    "binary size not a number": (binary([("pixels", "UINT8", [1, 4, 4, 3], PIXELS)], sizes=["48"]),
                                 "binary_data_size"),
    "binary size short of shape times dtype": (binary([("pixels", "UINT8", [1, 4, 4, 3], PIXELS[:-3])]),
                                               "does not match its shape"),
    "binary size leaving bytes unclaimed": (binary([("pixels", "UINT8", [1, 4, 4, 3], PIXELS)], sizes=[45]),
                                            "were not claimed"),
    "bytes element length past its tensor": (binary([("image", "BYTES", [1], b"\xff\xff\xff\xff" + GOOD[:100])]),
                                             "does not match its shape"),
}


@pytest.mark.parametrize("connection", ["detector"], indirect=True)
@pytest.mark.parametrize("case", sorted(LYING))
def test_binary_extension_lengths_that_lie_are_400_and_the_connection_serves_on(
        connection: http.client.HTTPConnection, case: str) -> None:
    (body, headers), reason = LYING[case]
    status, answer = send(connection, body, headers)
    assert status == 400, answer
    assert reason in error_of(answer)
    next_good_request_succeeds(connection)


# --- shapes -------------------------------------------------------------------------------------------

SHAPES = {
    "pixels shape product over the data (JSON)": (json_request({"inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [0] * 47}]}), 400,
        "does not match its shape"),
    "pixels shape product under the data (binary)": (binary([("pixels", "UINT8", [1, 2, 2, 3], PIXELS)]), 400,
                                                     "does not match its shape"),
    "a terapixel shape with 12 bytes": (binary([("pixels", "UINT8", [1, 100_000, 100_000, 3], bytes(12))]), 400,
                                        "does not match its shape"),
    "a terapixel shape as JSON": (json_request({"inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 100_000, 100_000, 3], "data": [0, 0, 0]}]}), 400,
        "does not match its shape"),
    "a zero batch": (binary([("pixels", "UINT8", [0, 4, 4, 3], b"")]), 400, "the batch is empty"),
    "a zero-height image": (binary([("pixels", "UINT8", [1, 0, 4, 3], b"")]), 400, "no pixels"),
    "a negative dimension": (binary([("pixels", "UINT8", [1, -4, 4, 3], PIXELS)]), 400, "non-negative integers"),
    "a dimension past int64": (binary([("pixels", "UINT8", [1, 1 << 70, 4, 3], PIXELS)]), 400,
                               "non-negative integers"),
    "a scalar pixels tensor": (binary([("pixels", "UINT8", [], b"\0")]), 400, "[N, H, W, 3] or [H, W, 3]"),
}


@pytest.mark.parametrize("connection", ["detector"], indirect=True)
@pytest.mark.parametrize("case", sorted(SHAPES))
def test_a_shape_at_odds_with_its_data_or_too_big_to_allocate_is_a_4xx_and_the_connection_serves_on(
        connection: http.client.HTTPConnection, case: str) -> None:
    (body, headers), expected, reason = SHAPES[case]
    status, answer = send(connection, body, headers)
    assert status == expected, answer
    assert reason in error_of(answer)
    next_good_request_succeeds(connection)


# --- extreme images -----------------------------------------------------------------------------------

def _strip(height: int, width: int) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 255
    return image


STRIPS = {"a 1x2000 JPEG": jpeg(_strip(1, 2000)), "a 2000x1 JPEG": jpeg(_strip(2000, 1)),
          "a 1x10000 PNG": png(_strip(1, 10_000)), "a 10000x1 PNG": png(_strip(10_000, 1))}


@pytest.mark.parametrize("connection", ["detector", "classifier"], indirect=True)
@pytest.mark.parametrize("case", sorted(STRIPS))
def test_an_extreme_strip_of_an_image_is_answered_below_500_and_the_connection_serves_on(
        connection: http.client.HTTPConnection, case: str) -> None:
    status, answer = send(connection, *image_request(STRIPS[case]))
    assert status == 200 or 400 <= status < 500, answer
    if status != 200:
        error_of(answer)
    next_good_request_succeeds(connection)


# --- outside the routes -------------------------------------------------------------------------------

@pytest.mark.parametrize("connection", ["detector"], indirect=True)
@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/v2/no/such/route", 404), ("POST", "/v2/health/live", 405), ("DELETE", "/v2/models/{name}", 405)])
def test_a_route_or_method_that_is_not_served_is_a_4xx_with_the_error_shape(
        connection: http.client.HTTPConnection, method: str, path: str, expected: int) -> None:
    connection.request(method, path.format(name=_served(connection).name))
    reply = connection.getresponse()
    answer = json.loads(reply.read())
    assert reply.status == expected, answer
    error_of(answer)
    next_good_request_succeeds(connection)
