"""Domain errors of the predictor, mapped to v2 status codes through KServe's own error types.

`InvalidInput` subclasses become 400 on REST and INVALID_ARGUMENT on gRPC in KServe's handlers, so a
caller's mistake never surfaces as a 500."""

from __future__ import annotations

from kserve.errors import InvalidInput


class InvalidTensor(InvalidInput):
    """An input tensor with the wrong name, datatype or shape for the loaded model."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class ModelLoadError(RuntimeError):
    """The model could not be loaded after every retry; the message says why."""


class UnsupportedModel(ValueError):
    """A model file we refuse to serve (wrong format, pickle, unreadable graph)."""
