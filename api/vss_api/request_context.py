"""Who a request is, across the transformer→predictor hop: its request id and its W3C trace context
(`traceparent`, `tracestate`), read from HTTP headers or gRPC metadata, forwarded as gRPC metadata, echoed in
responses, and stamped on every log line written while the request is served.

Values are checked before they are forwarded or echoed: a `traceparent` that is not W3C's format is dropped
with its `tracestate` (as the W3C recommendation asks), and only short printable-ASCII ids go into headers,
so nothing a client sends can split a response header or break gRPC metadata."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID = "x-request-id"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (REQUEST_ID, TRACEPARENT, TRACESTATE)

MAX_HEADER_CHARS = 512  # W3C: vendors should propagate at least 512 characters of tracestate
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})-[0-9a-f]{2}(?P<rest>-.*)?")


def header_safe(value: str) -> bool:
    """Short printable ASCII: fine as an HTTP header value and as gRPC metadata."""
    return 0 < len(value) <= MAX_HEADER_CHARS and _PRINTABLE_ASCII.fullmatch(value) is not None


def parse_traceparent(value: str | None) -> str | None:
    """`value` when it is a W3C traceparent (version 00 exactly, later versions by their 00 prefix), else None."""
    if value is None:
        return None
    value = value.strip()
    match = _TRACEPARENT.fullmatch(value) if header_safe(value) else None
    if match is None or match["version"] == "ff" or (match["version"] == "00" and match["rest"]):
        return None
    if set(match["trace_id"]) == {"0"} or set(match["parent_id"]) == {"0"}:
        return None
    return value


@dataclass(frozen=True)
class RequestContext:
    """A request's id (the v2 body's `id`, else `x-request-id`, else one made up here) and trace context."""

    request_id: str
    traceparent: str | None = None
    tracestate: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None, *, body_id: object = None) -> RequestContext:
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        header_id = lowered.get(REQUEST_ID, "").strip()
        # A v2 JSON body may carry any JSON value as its id; it is text from here on.
        request_id = ("" if body_id is None else str(body_id)) or (header_id if header_safe(header_id) else "") \
            or uuid.uuid4().hex
        traceparent = parse_traceparent(lowered.get(TRACEPARENT))
        tracestate = lowered.get(TRACESTATE, "").strip()
        return cls(request_id, traceparent,
                   tracestate if traceparent is not None and header_safe(tracestate) else None)

    @property
    def trace_id(self) -> str | None:
        return self.traceparent.split("-")[1] if self.traceparent else None

    def headers(self) -> dict[str, str]:
        """What goes on as gRPC metadata to the next hop, and back to the caller as response headers."""
        out = {REQUEST_ID: self.request_id} if header_safe(self.request_id) else {}
        if self.traceparent is not None:
            out[TRACEPARENT] = self.traceparent
            if self.tracestate is not None:
                out[TRACESTATE] = self.tracestate
        return out


# The request being served by the current task: each REST/gRPC request runs in its own asyncio task, whose
# context this variable lives in, so concurrent requests never see each other's.
_serving: ContextVar[RequestContext | None] = ContextVar("vss_request_context", default=None)


@contextmanager
def serving(context: RequestContext) -> Iterator[RequestContext]:
    """Log lines written inside this block (by this task) carry the request's id and trace id."""
    token = _serving.set(context)
    try:
        yield context
    finally:
        _serving.reset(token)


def current() -> RequestContext | None:
    return _serving.get()


class RequestContextFilter(logging.Filter):
    """Adds `request_id` and `trace_id` to records written while a request is served (`serving`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _serving.get()
        if context is not None:
            record.request_id = context.request_id
            if context.trace_id is not None:
                record.trace_id = context.trace_id
        return True
