"""Domain errors of the transformer. Caller mistakes are KServe `InvalidInput` (400 / INVALID_ARGUMENT);
the rest carry a gRPC status that the shared server maps to the matching HTTP status."""

from __future__ import annotations

from grpc_interceptor.exceptions import DeadlineExceeded, ResourceExhausted, Unavailable
from kserve.errors import InvalidInput


class InvalidImage(InvalidInput):
    """Bytes that are not a decodable JPEG/PNG image, or pixels of the wrong dtype/shape."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class InvalidRequest(InvalidInput):
    """A request whose tensors or fields do not fit the task (missing input, empty batch, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class PayloadTooLarge(ResourceExhausted):
    """An image whose pixel count exceeds the configured limit (413)."""


class PredictorUnavailable(Unavailable):
    """The predictor cannot be reached or is not ready (503)."""


class PredictorTimeout(DeadlineExceeded):
    """The predictor did not answer within the deadline (504)."""
