"""The KServe `ModelServer` bootstrap that the predictor and transformer processes share.

It adds what KServe 0.21 lacks for a hot path and a hostile network: a v2 REST infer route that keeps
binary tensors binary (KServe's own turns them into Python lists, and rejects non-UTF-8 BYTES such as
JPEG), a request-size limit answered with 413, a body that stops arriving answered with 408, the
`/v2/models/{name}/versions/{v}` routes (KServe answers them 501), KServe's model repository extension
(load/unload) refused on both protocols, Starlette's 404/405 in our `{"error": ...}`
shape, a limit on requests served at once answered with 503 +
`Retry-After` (health probes exempt), each request's deadline (`vss_api.deadlines`) from its gRPC deadline or
`timeout` parameter, Triton's `/v2/models/{name}/config` extension,
JSON logs, and the models' response headers (request id, trace context) returned on both protocols: KServe's
gRPC `ModelInfer` drops them, ours sends them as initial metadata.

A bug met while serving (any exception that is not a caller's mistake or one of `vss_api.errors`' statuses)
is answered with a fixed body naming only the request id, REST `500 {"error": "internal error", "requestId":
...}` and gRPC INTERNAL "internal error (request ...)", never the exception's type or message (KServe's own
handlers send both), and its traceback is logged once, with that id; the client's connection stays open."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import inspect
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc
import kserve
import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI, Request, Response
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceServicer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
from kserve.utils.utils import to_headers
from starlette.exceptions import HTTPException

from vss_api.deadlines import deadline_at, earliest, grpc_parameters, timeout_parameter_s
from vss_api.errors import (
    HTTP_STATUS_BY_GRPC,
    INTERNAL_ERROR,
    InternalError,
    RepositoryClosed,
    ServiceUnavailable,
    UnknownVersion,
)
from vss_api.request_context import REQUEST_ID, RequestContext, RequestContextFilter, header_safe
from vss_api.v2 import datatype_of

HEADER_LENGTH = "inference-header-content-length"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)


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

BODY_IDLE_TIMEOUT_S = 15.0  # a body that stops arriving this long is abandoned (nginx's client_body_timeout is 60)


class BodyIdleTimeout:
    """Pure ASGI middleware: a request whose body stops arriving for `idle_s` (a stalled or slowloris client) gets
    408 and its connection closed, since what is left of its body cannot be told from a next request. Uvicorn
    times out idle connections between requests, not a body that stops halfway, which held its request (and a
    `ConcurrencyLimit` slot) for ever."""

    def __init__(self, app: ASGIApp, idle_s: float = BODY_IDLE_TIMEOUT_S) -> None:
        self.app = app
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        more_body = True
        started = False

        async def timed() -> Message:
            nonlocal more_body
            if not more_body:  # the body is in: waiting for a disconnect is not a stalled body
                return await receive()
            try:
                async with asyncio.timeout(self.idle_s):
                    message = await receive()
            except TimeoutError:
                raise _BodyStalled from None
            more_body = message["type"] == "http.request" and bool(message.get("more_body"))
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed, watched)
        except _BodyStalled:
            if started:
                raise
            body = orjson.dumps({"error": f"the request body stopped arriving for {self.idle_s:g} s"})
            await send({"type": "http.response.start", "status": 408,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


class _BodyStalled(Exception):
    pass

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


class _Answering:
    """The id of the request the current task answers, once a route or `ModelInfer` has read it (a v2 body's
    `id` comes before `x-request-id`): what an internal error's answer and log line name."""

    __slots__ = ("request_id",)

    def __init__(self) -> None:
        self.request_id: str | None = None


# Set per request by `InternalErrors` (REST) and the gRPC methods' wrapper; the slot is mutable so that what the
# route writes into it, further in (in the same task, or a copy of its context), is seen where the error is caught.
_answering: ContextVar[_Answering | None] = ContextVar("vss_answering", default=None)


@contextmanager
def _answering_request() -> Iterator[_Answering]:
    slot = _Answering()
    token = _answering.set(slot)
    try:
        yield slot
    finally:
        _answering.reset(token)


def request_id_for(headers: dict[str, str], body_id: object = None) -> str:
    """The request's id as the models read it (`RequestContext.from_headers`), noted for an internal error's
    answer. One made up here is put into `headers` as `x-request-id`, so the model reads and logs the same id."""
    request_id = RequestContext.from_headers(headers, body_id=body_id).request_id
    if (body_id is None or str(body_id) == "") and headers.get(REQUEST_ID, "").strip() != request_id:
        headers[REQUEST_ID] = request_id
    slot = _answering.get()
    if slot is not None:
        slot.request_id = request_id
    return request_id


def _failed_request_id(headers: Mapping[str, str] | None) -> str:
    slot = _answering.get()
    if slot is not None and slot.request_id is not None:
        return slot.request_id
    header_id = {k.lower(): v for k, v in (headers or {}).items()}.get(REQUEST_ID, "").strip()
    return header_id if header_safe(header_id) else uuid.uuid4().hex


def _log_internal_error(exc: BaseException, request_id: str, where: str) -> None:
    log.error("internal error answering request %s (%s): the caller was told only the request id", request_id,
              where, exc_info=exc, extra={"request_id": request_id})


def internal_error_response(request_id: str) -> Response:
    response = json_response({"error": INTERNAL_ERROR, "requestId": request_id}, status_code=500)
    if header_safe(request_id):
        response.headers[REQUEST_ID] = request_id
    return response


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """A Starlette exception handler: a fixed 500 naming the request id, the traceback logged with it."""
    request_id = _failed_request_id(request.headers)
    _log_internal_error(exc, request_id, f"{request.method} {request.url.path}")
    return internal_error_response(request_id)


class InternalErrors:
    """Pure ASGI middleware: an exception that no handler further in answered (a bug: a caller's mistakes are
    `InvalidInput` or a `GrpcException`, answered by their handlers) gets `internal_error_response`, its traceback
    logged here, once. It is not raised further: Starlette's ServerErrorMiddleware, which a handler registered for
    `Exception` becomes, answers and then re-raises, and uvicorn then logs the traceback again and closes the
    client's keep-alive connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with _answering_request():
            try:
                await self.app(scope, receive, watched)
            except Exception as exc:
                if started:  # half an answer cannot be taken back: uvicorn logs it and drops the connection
                    raise
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
                request_id = _failed_request_id(headers)
                _log_internal_error(exc, request_id, f"{scope.get('method')} {scope.get('path')}")
                await internal_error_response(request_id)(scope, receive, send)


# What KServe's gRPC interceptor answers with a status and message of their own: caller mistakes and states
# (not found, not ready, unimplemented), and an abort the method made itself. Anything else is a bug.
_GRPC_ANSWERED = (InvalidInput, ModelNotFound, ModelNotReady, ServerNotLive, ServerNotReady, UnsupportedProtocol,
                  NotImplementedError, grpc.aio.AbortError)

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])
_Result = TypeVar("_Result")


def _internal_errors_hidden(method: _Method) -> _Method:
    """A gRPC method whose bugs answer INTERNAL "internal error (request <id>)", the traceback logged with the
    id; caller mistakes and `vss_api.errors` statuses pass on to KServe's interceptor unchanged."""

    @functools.wraps(method)
    async def answered(self: Any, request: Any, context: Any) -> Any:
        with _answering_request():
            try:
                return await method(self, request, context)
            except _GRPC_ANSWERED:
                raise
            except Exception as exc:
                if isinstance(exc, GrpcException) and exc.status_code in HTTP_STATUS_BY_GRPC:
                    raise
                request_id = _failed_request_id(to_headers(context))
                _log_internal_error(exc, request_id, f"gRPC {method.__name__}")
                raise InternalError(request_id) from None

    return answered  # type: ignore[return-value]


def _hiding_internal_errors(cls: type[InferenceServicer]) -> type[InferenceServicer]:
    """Every gRPC method of the servicer `_internal_errors_hidden` (KServe builds the server's interceptors
    itself, with no hook to add one)."""
    for name in vars(GRPCInferenceServiceServicer):
        method = getattr(cls, name)
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _internal_errors_hidden(method))
    return cls


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


# JSON larger than this is parsed in a thread, not on the event loop: 17 MB of v1 series took 0.3 s in orjson
# and as long again in the collector, during which no health probe was answered. Smaller bodies (every binary
# request's header, a JSON frame) are parsed in place: the hop costs more than they take.
PARSE_OFF_LOOP_BYTES = 256 * 1024


class JsonParsing:
    """Large request bodies parsed one at a time in a thread of their own. One, not a pool: orjson holds the GIL
    for the whole of a body, so parses in several threads take turns anyway and the event loop waits behind all
    of them."""

    # While a large JSON request is alive the cyclic garbage collector waits: its full collections scan every
    # list the parsed body holds (pauses grew to 0.6 s each with six 17 MB series in flight, probes then waited
    # over 2 s). Those lists are freed by reference counting; cycles others make wait at most this long.
    MAX_COLLECTOR_PAUSE_S = 10.0

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vss-json")
        self._large = 0
        self._paused_at: float | None = None

    @contextmanager
    def request(self, size: int) -> Iterator[None]:
        """Around the whole of a request whose JSON is `size` bytes; called on the event loop only."""
        if size <= PARSE_OFF_LOOP_BYTES:
            yield
            return
        now = time.monotonic()
        if self._paused_at is None and gc.isenabled():
            gc.disable()
            self._paused_at = now
        elif self._paused_at is not None and now - self._paused_at > self.MAX_COLLECTOR_PAUSE_S:
            gc.collect()
            self._paused_at = now
        self._large += 1
        try:
            yield
        finally:
            self._large -= 1
            if self._large == 0 and self._paused_at is not None:
                gc.enable()
                self._paused_at = None

    async def parse(self, size: int, function: Callable[..., _Result], *args: Any) -> _Result:
        """`function(*args)` parsing `size` bytes of JSON: in place when small, in the parsing thread when not."""
        if size <= PARSE_OFF_LOOP_BYTES:
            return function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(contextvars.copy_context().run,
                                                                          function, *args))

    async def body(self, body: bytes) -> Any:
        """A request body as JSON, off the event loop when it is large; bad JSON is the caller's mistake."""
        try:
            return await self.parse(len(body), orjson.loads, body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request is not valid JSON: {exc}") from exc


def not_ready_reason(model: object) -> str | None:
    """Why a model that loaded stays not ready (`not_ready_reason`: a predictor asked for a GPU it did not get),
    or None. KServe's readiness answers carry no reason, so ours do (`install_routes`)."""
    reason = getattr(model, "not_ready_reason", None)
    return reason if isinstance(reason, str) and reason else None


def refusals(dataplane: DataPlane) -> list[str]:
    """The reasons of every registered model that stays not ready."""
    return [f"{name}: {reason}" for name, model in dataplane.model_registry.get_models().items()
            if (reason := not_ready_reason(model)) is not None]


def install_routes(app: FastAPI, dataplane: DataPlane,
                   configs: dict[str, Callable[[], dict[str, Any]]]) -> None:
    """Routes registered before KServe's own, so they take precedence for the same paths."""
    parsing = JsonParsing()  # its idle thread ends with the process (concurrent.futures joins it at exit)

    async def server_ready() -> Response:
        """KServe's, but a model that stays not ready makes the server not ready, with its reason (KServe's
        answers 200 once the process serves, whatever its models)."""
        reasons = refusals(dataplane)
        if reasons:
            return json_response({"ready": False, "error": "; ".join(reasons)}, status_code=503)
        if not await dataplane.ready():
            raise ServerNotReady()
        return json_response({"ready": True})

    async def model_ready(model_name: str) -> Response:
        model = dataplane.model_registry.get_model(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        reason = not_ready_reason(model)
        if reason is not None:
            raise ModelNotReady(model_name, reason)
        if not await dataplane.model_ready(model_name):
            raise ModelNotReady(model_name)
        return json_response({"name": model_name, "ready": True})

    async def infer(model_name: str, request: Request) -> Response:
        arrived = time.monotonic()
        body = await request.body()
        declared = request.headers.get(HEADER_LENGTH)
        if declared is not None and not declared.isdigit():
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {declared!r}")
        json_length = int(declared) if declared else None
        json_size = len(body) if json_length is None else json_length
        with parsing.request(json_size):
            return await answer(model_name, request, arrived, body, json_length, json_size)

    async def answer(model_name: str, request: Request, arrived: float, body: bytes, json_length: int | None,
                     json_size: int) -> Response:
        infer_request = await parsing.parse(json_size, parse_v2_rest_request, body, json_length, model_name)
        headers = dict(request.headers)
        request_id_for(headers, infer_request.id)
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

    async def v1_predict(model_name: str, request: Request) -> Response:
        """KServe's v1 predict, with a large body parsed off the event loop (KServe parses it in place)."""
        if not await dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        body = await request.body()
        with parsing.request(len(body)):
            payload = await parsing.body(body)
            if not isinstance(payload, dict):
                raise InvalidInput('a v1 request is a JSON object: {"instances": [...]}')
            result, response_headers = await dataplane.infer(model_name=model_name, request=payload,
                                                             headers=dict(request.headers))
            del payload
        response = json_response(result)
        response.headers.update(_passed_on(response_headers))
        return response

    async def repository(model_name: str) -> None:
        raise RepositoryClosed(model_name)

    async def served_version(model_name: str, model_version: str) -> None:
        """A request naming a version: the one the model serves (its `version`), else 404. KServe 0.21 answers
        every such route 501 "not supported yet"."""
        model = dataplane.model_registry.get_model(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        served = getattr(model, "version", None)
        if model_version != served:
            raise UnknownVersion(model_name, model_version, served if isinstance(served, str) else None)

    async def version_infer(model_name: str, model_version: str, request: Request) -> Response:
        await served_version(model_name, model_version)
        return await infer(model_name, request)

    async def version_metadata(model_name: str, model_version: str) -> Response:
        await served_version(model_name, model_version)
        metadata = await dataplane.model_metadata(model_name)
        return json_response({**metadata, "versions": [model_version]})

    async def version_ready(model_name: str, model_version: str) -> Response:
        await served_version(model_name, model_version)
        return await model_ready(model_name)

    async def config(model_name: str) -> Response:
        await dataplane.get_model(model_name)  # 404/503 through KServe's handlers
        describe = configs.get(model_name)
        if describe is None:
            return json_response({"name": model_name, "parameters": {}})
        return json_response(describe())

    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/ready", model_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/infer", infer, methods=["POST"])
    app.add_api_route("/v1/models/{model_name}:predict", v1_predict, methods=["POST"])
    for action in ("load", "unload"):
        app.add_api_route(f"/v2/repository/models/{{model_name}}/{action}", repository, methods=["POST"])
    app.add_api_route("/v2/models/{model_name}/config", config, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer", version_infer, methods=["POST"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}", version_metadata, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/ready", version_ready, methods=["GET"])


def _passed_on(response_headers: dict[str, str] | None) -> dict[str, str]:
    """The model's response headers, less those the response's own encoding sets."""
    return {k.lower(): v for k, v in (response_headers or {}).items()
            if k.lower() not in ("content-length", "content-type", HEADER_LENGTH)}


@_hiding_internal_errors
class HeaderEchoingServicer(InferenceServicer):
    """KServe's gRPC servicer, but `ModelInfer` sends the model's response headers as initial metadata
    (KServe 0.21 discards them), so gRPC callers get the request id and trace context back as REST ones do; the
    call's deadline (gRPC's own, or the `timeout` parameter if sooner) is the request's deadline; and a bug in
    any method answers INTERNAL naming only the request id (`_internal_errors_hidden`)."""

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,  # noqa: N802
                                  context: Any) -> pb.RepositoryModelLoadResponse:
        raise RepositoryClosed(request.model_name)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,  # noqa: N802
                                    context: Any) -> pb.RepositoryModelUnloadResponse:
        raise RepositoryClosed(request.model_name)

    async def ServerReady(self, request: pb.ServerReadyRequest,  # noqa: N802
                          context: Any) -> pb.ServerReadyResponse:
        """Not ready while a model stays not ready (as `/v2/health/ready`): the transformer's health check of its
        predictor asks this."""
        if refusals(self._data_plane):
            return pb.ServerReadyResponse(ready=False)
        return pb.ServerReadyResponse(ready=await self._data_plane.ready())

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        arrived = time.monotonic()
        headers = to_headers(context)
        request_id_for(headers, request.id)
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


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (a method the route does not take), in the error shape of every
    other answer, `{"error": ...}`, instead of Starlette's `{"detail": ...}`."""
    assert isinstance(exc, HTTPException)
    response = json_response({"error": str(exc.detail)}, status_code=exc.status_code)
    response.headers.update(exc.headers or {})
    return response


async def grpc_status_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GrpcException)
    status = HTTP_STATUS_BY_GRPC.get(exc.status_code)
    if status is None:  # not a status of ours for the caller: a bug's, whose details are not theirs to read
        return await internal_error_handler(request, exc)
    response = json_response({"error": exc.details}, status_code=status)
    if isinstance(exc, ServiceUnavailable):
        response.headers["retry-after"] = str(exc.retry_after_s)
    return response


GRPC_LIMIT_HEADROOM = 8  # RPCs past `max_concurrency` that still reach the servicer: metadata and readiness calls


class BoundedAio:
    """`grpc.aio` whose `server()` takes at most `limit` streams per connection (HTTP/2's
    SETTINGS_MAX_CONCURRENT_STREAMS) and `limit` RPCs at once: a client offering more waits on its own side,
    under its own deadline, instead of in this process's memory. Without it every request a gRPC client sent
    was accepted and its message buffered by gRPC's core ahead of our handler's limit: at 4x the capacity
    (benchmarks/overload.py) the transformer grew from 180 to 1,054 MB, answers took 18 s at p50, and a quarter
    of them ended CANCELLED. With it: at most 331 MB, no CANCELLED, the rest 200 / UNAVAILABLE / 504 as on REST."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def server(self, *args: Any, **kwargs: Any) -> grpc.aio.Server:
        kwargs.setdefault("maximum_concurrent_rpcs", self.limit)
        kwargs["options"] = [*(kwargs.get("options") or ()), ("grpc.max_concurrent_streams", self.limit)]
        return grpc.aio.server(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(grpc.aio, name)


def serve(models: list[kserve.Model], *, max_request_bytes: int, max_concurrency: int,
          configs: dict[str, Callable[[], dict[str, Any]]] | None = None,
          body_idle_timeout_s: float = BODY_IDLE_TIMEOUT_S, **server_args: Any) -> None:
    """Start KServe's ModelServer with our routes and limits; blocks until SIGTERM/SIGINT. KServe builds
    uvicorn's configuration itself with no `limit_concurrency` to pass, so the REST limit is our middleware
    (which also answers 503 with `Retry-After` where uvicorn's has neither, and spares the probes)."""
    from kserve import model_server  # the FastAPI app lives at module level in KServe
    from kserve.protocol.grpc import server as grpc_server
    from kserve.protocol.rest import server as rest_server

    # KServe's GRPCServer builds its servicer from this module-level name, with no hook to pass another.
    grpc_server.InferenceServicer = HeaderEchoingServicer
    # ... and its server with `aio.server(...)`, with no hook for a concurrency limit either (see BoundedAio).
    grpc_server.aio = BoundedAio(max_concurrency + GRPC_LIMIT_HEADROOM)
    # KServe's RESTServer registers its handlers when it starts, after ours, by these module-level names: its
    # handler for `Exception` (and for its `InferenceError`, a model's output that will not serialize) answers
    # 500 with the exception's type and message.
    rest_server.generic_exception_handler = internal_error_handler
    rest_server.inference_error_handler = internal_error_handler
    server = kserve.ModelServer(**server_args)
    install_routes(model_server.app, server.dataplane, configs or {})
    model_server.app.add_exception_handler(GrpcException, grpc_status_error_handler)
    model_server.app.add_exception_handler(HTTPException, http_exception_handler)
    model_server.app.add_middleware(ConcurrencyLimit, limit=max_concurrency)
    model_server.app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)  # sizes first
    model_server.app.add_middleware(BodyIdleTimeout, idle_s=body_idle_timeout_s)
    model_server.app.add_middleware(InternalErrors)  # outermost: a 413 is not an internal error
    # A model that loaded but stays not ready (it says why) is registered without KServe's start, which refuses
    # to serve when no model is ready: the process then answers its probes with the reason instead of exiting.
    refused = [m for m in models if not m.ready and not_ready_reason(m) is not None]
    for model in refused:
        server.register_model(model)
    server.start([m for m in models if m not in refused])
