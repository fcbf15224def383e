"""Data-plane errors that both serving processes raise, and the HTTP status of each, in one place.

A caller's mistake is a KServe `InvalidInput` (400 on REST, INVALID_ARGUMENT on gRPC, through KServe's own
handlers); everything else carries its gRPC status (grpc_interceptor's `GrpcException` family), which
`server` turns into the matching HTTP status with `HTTP_STATUS_BY_GRPC`. So one exception class answers
right on both protocols, and no caller mistake surfaces as a 500. Any other exception is a bug: the caller gets
a fixed "internal error" naming the request id (500, gRPC INTERNAL: `InternalError`), never the exception's
type or message, and the traceback is logged once with that id."""

from __future__ import annotations

from grpc import StatusCode
from grpc_interceptor.exceptions import (
    DeadlineExceeded,
    Internal,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from kserve.errors import InvalidInput


class InvalidRequest(InvalidInput):
    """A request whose tensors or fields do not fit the model or task (missing input, wrong shape, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class UnknownVersion(NotFound):
    """A request to a version of a served model that this server does not serve (404, gRPC NOT_FOUND): each
    server serves one version of its model, and a rollout sends other versions to other servers."""

    def __init__(self, model_name: str, version: str, served: str | None) -> None:
        serves = f"it serves version {served!r}" if served else "it serves no version by name"
        super().__init__(f"model {model_name!r} has no version {version!r} here: {serves}")


class RepositoryClosed(PermissionDenied):
    """A call to KServe's model repository extension (load, unload), which the data plane refuses (403, gRPC
    PERMISSION_DENIED): anyone who could reach the port could unload the model. The operator decides what runs."""

    def __init__(self, model_name: str) -> None:
        super().__init__(f"loading and unloading models is not served here (model {model_name!r}): each server "
                         "serves the model its VSSModel names, and the operator changes that")


class PayloadTooLarge(ResourceExhausted):
    """A request that asks for more than the configured limits allow (413)."""


RETRY_AFTER_S = 1  # what a 503's Retry-After says: the queue drains in well under a second at capacity


class ServiceUnavailable(Unavailable):
    """A dependency of the request (the predictor, for the transformer) cannot be reached or is not ready (503,
    with `Retry-After`: every 503 here is a condition that passes)."""

    retry_after_s: int = RETRY_AFTER_S


class Overloaded(ServiceUnavailable):
    """A bounded queue or concurrency limit is full: the request was refused before any work on it (503 with
    `Retry-After` on REST, UNAVAILABLE on gRPC). UNAVAILABLE rather than RESOURCE_EXHAUSTED: gRPC documents it as
    the transient code to retry with backoff (the code gRPC retry policies and Triton's full queue use), while
    RESOURCE_EXHAUSTED is our 413, a request too large to ever succeed."""


class RequestTimeout(DeadlineExceeded):
    """The request did not complete within its deadline (504)."""


INTERNAL_ERROR = "internal error"


class InternalError(Internal):
    """What a gRPC caller is told of a bug met while serving its request (INTERNAL): the request's id and
    nothing of the exception, whose traceback `server` logged with that id (REST callers get a 500 whose body
    names the id likewise)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"{INTERNAL_ERROR} (request {request_id})")
        self.request_id = request_id


HTTP_STATUS_BY_GRPC = {
    StatusCode.INVALID_ARGUMENT: 400, StatusCode.FAILED_PRECONDITION: 400, StatusCode.PERMISSION_DENIED: 403,
    StatusCode.NOT_FOUND: 404,
    StatusCode.RESOURCE_EXHAUSTED: 413, StatusCode.UNAVAILABLE: 503, StatusCode.DEADLINE_EXCEEDED: 504,
}
