"""The KServe `ModelServer` bootstrap that the predictor and transformer processes share.

It adds what KServe 0.21 lacks for a hot path and a hostile network: a v2 REST infer route that keeps
binary tensors binary (KServe's own turns them into Python lists, and rejects non-UTF-8 BYTES such as
JPEG), a request-size limit answered with 413, a limit on requests served at once answered with 503 +
`Retry-After` (health probes exempt), each request's deadline (`vss_api.deadlines`) from its gRPC deadline or
`timeout` parameter, Triton's `/v2/models/{name}/config` extension,
JSON logs, and the models' response headers (request id, trace context) returned on both protocols: KServe's
gRPC `ModelInfer` drops them, ours sends them as initial metadata."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import kserve
import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI, Request, Response
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
from kserve.utils.utils import to_headers

from vss_api.deadlines import deadline_at, earliest, grpc_parameters, timeout_parameter_s
from vss_api.errors import HTTP_STATUS_BY_GRPC, ServiceUnavailable
from vss_api.request_context import RequestContextFilter
from vss_api.v2 import datatype_of

HEADER_LENGTH = "inference-header-content-length"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra` fields."""

    _standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        event.update({k: v for k, v in vars(record).items() if k not in self._standard})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure_json_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    for name in ("", "kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler] if name == "" else []
        logger.propagate = name != ""
    logging.getLogger().setLevel(level)
    logging.getLogger("kserve.trace").setLevel("WARNING")  # per-request latency lines: metrics say it
    # KServe logs "grpc method: ..." at INFO for every call: ~5 % of the event loop's time under load.
    logging.getLogger("kserve").addFilter(lambda record: not record.getMessage().startswith("grpc method:"))
    logging.getLogger("uvicorn.access").setLevel("WARNING")


class BodySizeLimit:
    """Pure ASGI middleware: a body over `max_bytes` gets 413 before it is read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= DRAIN_FACTOR * self.max_bytes:
                await _discard_body(receive)  # so the client reads our 413 instead of a reset
            await _too_large(send, self.max_bytes)
            return
        seen = 0
        rejected = False

        async def limited() -> Message:
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    rejected = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)
        except Exception:
            if rejected:
                await _too_large(send, self.max_bytes)
            else:
                raise


DRAIN_FACTOR = 16

UNCOUNTED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ConcurrencyLimit:
    """Pure ASGI middleware: at most `limit` requests are served at once; one more gets 503 with `Retry-After`
    at once, its body drained unread (inside `BodySizeLimit`, so at most its limit) so the client reads the 503
    and keeps its connection. GETs are neither counted nor refused: they are the liveness and readiness probes,
    metrics and metadata, cheap and bodiless, and a kubelet that saw a busy but healthy pod fail its liveness
    probe would restart it and lose everything it had queued."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {limit}")
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in UNCOUNTED_METHODS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await _discard_body(receive)
            await _overloaded(send, f"the server is at its limit of {self.limit} requests at once: retry later")
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def _overloaded(send: Send, reason: str) -> None:
    body = orjson.dumps({"error": reason})
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(ServiceUnavailable.retry_after_s).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _discard_body(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps({"error": f"request body is larger than the limit of {limit} bytes"})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def binary_output(name: str, array: npt.NDArray[np.generic]) -> InferOutput:
    """An output tensor held as raw bytes: gRPC sends them as raw contents, REST as binary data when
    asked for and as JSON otherwise, with no detour through Python lists on the binary paths."""
    tensor = InferOutput(name=name, shape=list(array.shape), datatype=datatype_of(array))
    tensor.set_data_from_numpy(np.ascontiguousarray(array), binary_data=True)
    return tensor


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code,
                    media_type="application/json")


def parse_v2_rest_request(body: bytes, json_length: int | None, model_name: str) -> InferRequest:
    """A v2 REST request, binary extension included, with binary tensors kept as raw bytes."""
    size = len(body) if json_length is None else json_length
    if size > len(body) or size < 0:
        raise InvalidInput(f"{HEADER_LENGTH} is {json_length} but the body has only {len(body)} bytes")
    try:
        header = orjson.loads(body[:size])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("request must be a JSON object with an 'inputs' list")
    offset = size
    inputs = []
    for index, spec in enumerate(header["inputs"]):
        if not isinstance(spec, dict) or not {"name", "shape", "datatype"} <= spec.keys():
            raise InvalidInput(f"inputs[{index}] needs 'name', 'shape' and 'datatype'")
        shape = spec["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidInput(f"inputs[{index}].shape must be a list of non-negative integers")
        params = spec.get("parameters") or {}
        tensor = InferInput(name=str(spec["name"]), shape=shape, datatype=str(spec["datatype"]),
                            parameters=params or None)
        if "data" in spec:
            tensor.data = spec["data"]
        elif "binary_data_size" in params:
            length = params["binary_data_size"]
            if not isinstance(length, int) or length < 0 or offset + length > len(body):
                raise InvalidInput(f"input {spec['name']!r}: binary_data_size {length} runs past the body")
            tensor._raw_data = body[offset:offset + length]
            offset += length
        else:
            raise InvalidInput(f"input {spec['name']!r} has neither 'data' nor binary_data_size")
        inputs.append(tensor)
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} bytes after the last binary tensor were not claimed")
    outputs = None
    if isinstance(header.get("outputs"), list):
        outputs = [RequestedOutput(name=str(o.get("name")), parameters=o.get("parameters"))
                   for o in header["outputs"] if isinstance(o, dict)]
    return InferRequest(model_name=model_name, infer_inputs=inputs, request_id=header.get("id"),
                        parameters=header.get("parameters"), request_outputs=outputs)


def install_routes(app: FastAPI, dataplane: DataPlane,
                   configs: dict[str, Callable[[], dict[str, Any]]]) -> None:
    """Routes registered before KServe's own, so they take precedence for the same paths."""

    async def infer(model_name: str, request: Request) -> Response:
        arrived = time.monotonic()
        body = await request.body()
        declared = request.headers.get(HEADER_LENGTH)
        if declared is not None and not declared.isdigit():
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {declared!r}")
        infer_request = parse_v2_rest_request(body, int(declared) if declared else None, model_name)
        headers = dict(request.headers)
        deadline = earliest(timeout_parameter_s(infer_request.parameters), now=arrived)
        with deadline_at(deadline):
            result, response_headers = await dataplane.infer(model_name=model_name, request=infer_request,
                                                             headers=headers)
        if not isinstance(result, InferResponse):
            raise InvalidInput(f"model {model_name!r} does not answer v2 requests")
        extra = _passed_on(response_headers)
        content, json_length = result.to_rest()
        if isinstance(content, bytes):
            return Response(content, media_type="application/octet-stream",
                            headers={**extra, HEADER_LENGTH: str(json_length)})
        response = json_response(content)
        response.headers.update(extra)
        return response

    async def config(model_name: str) -> Response:
        await dataplane.get_model(model_name)  # 404/503 through KServe's handlers
        describe = configs.get(model_name)
        if describe is None:
            return json_response({"name": model_name, "parameters": {}})
        return json_response(describe())

    app.add_api_route("/v2/models/{model_name}/infer", infer, methods=["POST"])
    app.add_api_route("/v2/models/{model_name}/config", config, methods=["GET"])


def _passed_on(response_headers: dict[str, str] | None) -> dict[str, str]:
    """The model's response headers, less those the response's own encoding sets."""
    return {k.lower(): v for k, v in (response_headers or {}).items()
            if k.lower() not in ("content-length", "content-type", HEADER_LENGTH)}


class HeaderEchoingServicer(InferenceServicer):
    """KServe's gRPC servicer, but `ModelInfer` sends the model's response headers as initial metadata
    (KServe 0.21 discards them), so gRPC callers get the request id and trace context back as REST ones do; and
    the call's deadline (gRPC's own, or the `timeout` parameter if sooner) is the request's deadline."""

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        arrived = time.monotonic()
        headers = to_headers(context)
        self.validate_grpc_request(request)
        deadline = earliest(context.time_remaining(), timeout_parameter_s(grpc_parameters(request.parameters)),
                            now=arrived)
        infer_request = InferRequest.from_grpc(request)
        with deadline_at(deadline):
            result, response_headers = await self._data_plane.infer(
                request=infer_request, headers=headers, model_name=request.model_name)
        metadata = tuple(_passed_on(response_headers).items())
        if metadata:
            await context.send_initial_metadata(metadata)
        if isinstance(result, pb.ModelInferResponse):
            return result
        if isinstance(result, InferResponse):
            return result.to_grpc()
        return pb.ModelInferResponse(id=result["id"], model_name=result["model_name"], outputs=result["outputs"])


async def grpc_status_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GrpcException)
    status = HTTP_STATUS_BY_GRPC.get(exc.status_code, 500)
    response = json_response({"error": exc.details}, status_code=status)
    if isinstance(exc, ServiceUnavailable):
        response.headers["retry-after"] = str(exc.retry_after_s)
    return response


def serve(models: list[kserve.Model], *, max_request_bytes: int, max_concurrency: int,
          configs: dict[str, Callable[[], dict[str, Any]]] | None = None,
          **server_args: Any) -> None:
    """Start KServe's ModelServer with our routes and limits; blocks until SIGTERM/SIGINT. KServe builds
    uvicorn's configuration itself with no `limit_concurrency` to pass, so the REST limit is our middleware
    (which also answers 503 with `Retry-After` where uvicorn's has neither, and spares the probes)."""
    from kserve import model_server  # the FastAPI app lives at module level in KServe
    from kserve.protocol.grpc import server as grpc_server

    # KServe's GRPCServer builds its servicer from this module-level name, with no hook to pass another.
    grpc_server.InferenceServicer = HeaderEchoingServicer
    server = kserve.ModelServer(**server_args)
    install_routes(model_server.app, server.dataplane, configs or {})
    model_server.app.add_exception_handler(GrpcException, grpc_status_error_handler)
    model_server.app.add_middleware(ConcurrencyLimit, limit=max_concurrency)
    model_server.app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)  # outermost: sizes first
    server.start(models)
