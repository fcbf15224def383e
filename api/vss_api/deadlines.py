"""A request's deadline: the earliest of the caller's gRPC deadline, the v2 request's `timeout` parameter (Triton's
name and unit, microseconds, which tritonclient's `infer(timeout=...)` sends on REST and gRPC) and the serving
process's default. `server`'s REST route and gRPC servicer set it for the task that serves the request (a context
variable); the models read it with `current_deadline`. Deadlines are `time.monotonic()` instants."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from vss_api.errors import InvalidRequest

TIMEOUT_PARAMETER = "timeout"
MAX_TIMEOUT_US = 3600 * 1_000_000  # an hour: longer is a mistake, not a deadline

_deadline: ContextVar[float | None] = ContextVar("vss_request_deadline", default=None)


def timeout_parameter_s(parameters: Mapping[str, Any] | None) -> float | None:
    """The `timeout` request parameter in seconds (None when absent); anything but a positive whole number of
    microseconds up to an hour is the caller's mistake, as are parameters that are not an object."""
    if parameters is not None and not isinstance(parameters, Mapping):
        raise InvalidRequest(f"request parameters must be an object of name: value, got {type(parameters).__name__}")
    value = (parameters or {}).get(TIMEOUT_PARAMETER)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMEOUT_US:
        raise InvalidRequest(f"parameter {TIMEOUT_PARAMETER!r} must be a whole number of microseconds from 1 "
                             f"to {MAX_TIMEOUT_US}, got {value!r}")
    return value / 1_000_000


def grpc_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A gRPC request's `InferParameter` map as plain values (`bool_param`, `int64_param`, ...)."""
    plain: dict[str, Any] = {}
    for name, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        plain[name] = None if choice is None else getattr(parameter, choice)
    return plain


def earliest(*timeouts_s: float | None, now: float) -> float | None:
    """The deadline of the shortest of `timeouts_s` from `now`; None when none is given."""
    given = [t for t in timeouts_s if t is not None]
    return now + min(given) if given else None


@contextmanager
def deadline_at(deadline: float | None) -> Iterator[None]:
    """The request served inside has `deadline` (an earlier one already set for it stays)."""
    outer = _deadline.get()
    if deadline is None or (outer is not None and outer <= deadline):
        yield
        return
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def current_deadline(default_s: float | None = None, *, now: float | None = None) -> float | None:
    """The deadline of the request being served: the one its caller set, or `default_s` from now if sooner."""
    now = time.monotonic() if now is None else now
    given = _deadline.get()
    fallback = None if default_s is None else now + default_s
    if given is None or fallback is None:
        return given if fallback is None else fallback
    return min(given, fallback)
