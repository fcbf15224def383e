"""Domain errors of the transformer, on the shared data-plane errors of `vss_api.errors` (which map them to
HTTP and gRPC status)."""

from __future__ import annotations

from vss_api.errors import InvalidRequest, RequestTimeout, ServiceUnavailable


class InvalidImage(InvalidRequest):
    """Bytes that are not a decodable JPEG/PNG image, or pixels of the wrong dtype/shape (400)."""


class PredictorUnavailable(ServiceUnavailable):
    """The predictor cannot be reached or is not ready (503)."""


class PredictorTimeout(RequestTimeout):
    """The predictor did not answer within the deadline (504)."""
