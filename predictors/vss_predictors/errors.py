"""Domain errors of the predictor, on the shared data-plane errors of `vss_api.errors` (a caller's mistake is
400 on REST and INVALID_ARGUMENT on gRPC, never a 500)."""

from __future__ import annotations

from vss_api.errors import InvalidRequest, Overloaded, RequestTimeout, ServiceUnavailable


class InvalidTensor(InvalidRequest):
    """An input tensor with the wrong name, datatype or shape for the loaded model."""


class ModelLoadError(RuntimeError):
    """The model could not be loaded after every retry; the message says why."""


class UnsupportedModel(ValueError):
    """A model file we refuse to serve (wrong format, pickle, unreadable graph)."""


class PredictorStopping(ServiceUnavailable):
    """The predictor is shutting down: a request it had not started is refused (503, gRPC UNAVAILABLE)."""


class QueueFull(Overloaded):
    """The batcher's queue holds `max_queue_size` requests already: this one is refused before any work (503 with
    Retry-After, gRPC UNAVAILABLE); those queued are all still run."""


class DeadlineExpired(RequestTimeout):
    """The request's deadline passed before it was answered (504, gRPC DEADLINE_EXCEEDED); if it had not started,
    it never runs."""
