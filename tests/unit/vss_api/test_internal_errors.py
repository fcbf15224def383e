"""A bug met while serving, against a real `serve()` on loopback (this module, run as a program, serves a model
whose `predict` fails as asked): the caller gets a fixed "internal error" naming the request id, on REST and
gRPC, never the exception's type or message; the traceback is logged once with that id; the connection serves
the next request; and caller mistakes keep their status and message."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.support.apiserver import free_port
from vss_api.request_context import RequestContext, serving
from vss_api.server import request_id_for

REPO = Path(__file__).resolve().parents[3]
MODEL = "failing"
SECRET = "secret path /etc/xyz"
log = logging.getLogger("failing_model")


def _serve_failing_model(http_port: int, grpc_port: int) -> None:
    import kserve
    from kserve.protocol.infer_type import InferResponse

    from vss_api.server import binary_output, configure_json_logging, serve

    class FailingModel(kserve.Model):
        """Fails as its first input's name says: `bug`, `inference-error`, `bad`; answers otherwise."""

        def __init__(self) -> None:
            super().__init__(MODEL)
            self.ready = True

        async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> Any:
            if isinstance(payload, dict):  # v1
                raise RuntimeError(SECRET)
            context = RequestContext.from_headers(headers, body_id=payload.id)
            with serving(context):
                log.info("predicting")
                name = payload.inputs[0].name
                if name == "bug":
                    raise RuntimeError(SECRET)
                if name == "inference-error":
                    raise InferenceError(f"cannot serialize {SECRET}")
                if name == "bad":
                    raise InvalidInput("input 'bad' is not one this model takes")
                return InferResponse(response_id=payload.id or context.request_id, model_name=self.name,
                                     infer_outputs=[binary_output("y", np.arange(3, dtype=np.int32))])

    configure_json_logging("INFO")
    serve([FailingModel()], max_request_bytes=1_000_000, max_concurrency=8, http_port=http_port,
          grpc_port=grpc_port)


@dataclass
class Served:
    http_port: int
    grpc_port: int
    log: Path

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def lines_of(self, request_id: str, message: str, deadline_s: float = 10.0) -> list[dict[str, Any]]:
        """The log lines of `request_id` whose message has `message`, once there is one (or none by the deadline)."""
        end = time.monotonic() + deadline_s
        while True:
            found = [e for e in self.lines() if e.get("request_id") == request_id and message in e["message"]]
            if found or time.monotonic() > end:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    http_port, grpc_port = free_port(), free_port()
    log_path = tmp_path_factory.mktemp("failing") / "server.log"
    with log_path.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.unit.vss_api.test_internal_errors", str(http_port), str(grpc_port)],
            stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    result = Served(http_port, grpc_port, log_path)
    try:
        end = time.monotonic() + 60
        while not _ready(result):
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > end:
                raise TimeoutError(f"the server was not ready in 60 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.1)
        yield result
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(served: Served) -> bool:
    connection = served.connection()
    try:
        connection.request("GET", f"/v2/models/{MODEL}/ready")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _v2(input_name: str, request_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"inputs": [{"name": input_name, "shape": [1], "datatype": "INT32", "data": [1]}]}
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body).encode()


def _post(connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str] | None = None,
          path: str = f"/v2/models/{MODEL}/infer") -> http.client.HTTPResponse:
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    reply = connection.getresponse()
    reply.read()
    return reply


def _infer_over_http(served: Served, body: bytes, headers: dict[str, str] | None = None,
                     path: str = f"/v2/models/{MODEL}/infer") -> tuple[int, bytes, http.client.HTTPMessage]:
    connection = served.connection()
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        reply = connection.getresponse()
        return reply.status, reply.read(), reply.headers
    finally:
        connection.close()


def _assert_tells_nothing_of_the_exception(text: str) -> None:
    assert "RuntimeError" not in text and "InferenceError" not in text
    assert "/etc/xyz" not in text and "secret" not in text


def _assert_only_our_line_tells_of_the_exception(served: Served) -> None:
    """Each bug's traceback is in one line, ours, with its request id: neither KServe's handlers nor uvicorn
    ("Exception in ASGI application") log it again."""
    telling = [e for e in served.lines() if SECRET in json.dumps(e)]
    assert telling
    assert all(e["logger"] == "vss_api.server" and e["message"].startswith("internal error answering request")
               and e["message"].split()[4] == e["request_id"] for e in telling), telling
    assert len({e["request_id"] for e in telling}) == len(telling)


def test_a_bug_answers_500_naming_only_the_request_id_and_the_same_connection_serves_the_next_request(
        served: Served) -> None:
    connection = served.connection()
    try:
        failed = _post(connection, _v2("bug", "req-bug-1"))
        connection.request("POST", f"/v2/models/{MODEL}/infer", body=_v2("bug", "req-bug-2"),
                           headers={"Content-Type": "application/json"})
        again = connection.getresponse()
        body = again.read()
        answered = _post(connection, _v2("x", "req-after"))
    finally:
        connection.close()
    assert failed.status == 500 and again.status == 500
    assert json.loads(body) == {"error": "internal error", "requestId": "req-bug-2"}
    _assert_tells_nothing_of_the_exception(body.decode())
    assert again.getheader("x-request-id") == "req-bug-2"
    assert again.getheader("connection", "").lower() != "close"
    assert answered.status == 200


def test_the_traceback_is_logged_once_with_the_request_id(served: Served) -> None:
    status, _, _ = _infer_over_http(served, _v2("bug", "req-logged"))
    assert status == 500
    logged = served.lines_of("req-logged", "internal error")
    assert len(logged) == 1, logged
    assert "Traceback" in logged[0]["exception"] and f"RuntimeError: {SECRET}" in logged[0]["exception"]
    _assert_only_our_line_tells_of_the_exception(served)


def test_without_an_id_the_answer_names_the_one_made_up_for_the_request_which_the_models_log_lines_carry(
        served: Served) -> None:
    status, body, headers = _infer_over_http(served, _v2("bug"))
    assert status == 500
    request_id = json.loads(body)["requestId"]
    assert request_id and headers["x-request-id"] == request_id
    assert served.lines_of(request_id, "predicting")
    assert served.lines_of(request_id, "internal error")


def test_the_x_request_id_header_names_the_request_when_the_body_has_no_id(served: Served) -> None:
    status, body, _ = _infer_over_http(served, _v2("bug"), {"x-request-id": "from-header"})
    assert status == 500 and json.loads(body)["requestId"] == "from-header"


def test_a_kserve_inference_error_is_a_bug_and_answers_the_same_fixed_500(served: Served) -> None:
    status, body, _ = _infer_over_http(served, _v2("inference-error", "req-ie"))
    assert status == 500 and json.loads(body) == {"error": "internal error", "requestId": "req-ie"}
    _assert_tells_nothing_of_the_exception(body.decode())


def test_a_bug_on_kserves_own_routes_is_answered_the_same_way(served: Served) -> None:
    status, body, _ = _infer_over_http(served, b'{"instances": [1]}', {"x-request-id": "v1-req"},
                                       path=f"/v1/models/{MODEL}:predict")
    assert status == 500 and json.loads(body) == {"error": "internal error", "requestId": "v1-req"}
    _assert_tells_nothing_of_the_exception(body.decode())


def test_a_callers_mistake_keeps_its_400_and_its_message(served: Served) -> None:
    status, body, _ = _infer_over_http(served, _v2("bad"))
    assert status == 400 and json.loads(body) == {"error": "input 'bad' is not one this model takes"}
    status, body, _ = _infer_over_http(served, b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]


def test_an_unknown_model_keeps_its_404_and_its_message(served: Served) -> None:
    status, body, _ = _infer_over_http(served, _v2("x"), path="/v2/models/no-such-model/infer")
    assert status == 404 and "no-such-model" in json.loads(body)["error"]


def _grpc_request(input_name: str, request_id: str = "") -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name=input_name, datatype="INT32", shape=[1],
                                                   contents=pb.InferTensorContents(int_contents=[1]))
    return pb.ModelInferRequest(model_name=MODEL, id=request_id, inputs=[tensor])


def _grpc_error(stub: GRPCInferenceServiceStub, request: pb.ModelInferRequest,
                metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30, metadata=metadata)
    return caught.value


def test_a_bug_over_grpc_answers_internal_naming_only_the_request_id_and_the_channel_serves_the_next_call(
        served: Served) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        error = _grpc_error(stub, _grpc_request("bug", "grpc-bug"))
        inference_error = _grpc_error(stub, _grpc_request("inference-error"), (("x-request-id", "grpc-ie"),))
        answered = stub.ModelInfer(_grpc_request("x", "grpc-after"), timeout=30)
    assert error.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert error.details() == "internal error (request grpc-bug)"  # type: ignore[attr-defined]
    assert inference_error.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert inference_error.details() == "internal error (request grpc-ie)"  # type: ignore[attr-defined]
    assert answered.id == "grpc-after"
    logged = served.lines_of("grpc-bug", "internal error")
    assert len(logged) == 1 and f"RuntimeError: {SECRET}" in logged[0]["exception"]
    _assert_only_our_line_tells_of_the_exception(served)


def test_a_callers_mistake_over_grpc_keeps_invalid_argument_and_its_message(served: Served) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        error = _grpc_error(stub, _grpc_request("bad"))
        missing = _grpc_error(stub, pb.ModelInferRequest(model_name="no-such-model", inputs=[]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert error.details() == "input 'bad' is not one this model takes"  # type: ignore[attr-defined]
    assert missing.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert "no-such-model" in missing.details()  # type: ignore[attr-defined]


def test_an_id_made_up_for_a_request_is_put_in_its_headers_for_the_model_to_read() -> None:
    headers: dict[str, str] = {}
    made_up = request_id_for(headers)
    assert headers == {"x-request-id": made_up}
    assert RequestContext.from_headers(headers).request_id == made_up
    sent = {"x-request-id": "mine"}
    assert request_id_for(sent) == "mine" and sent == {"x-request-id": "mine"}
    from_body: dict[str, str] = {}
    assert request_id_for(from_body, "body-id") == "body-id" and from_body == {}


if __name__ == "__main__":
    _serve_failing_model(int(sys.argv[1]), int(sys.argv[2]))
