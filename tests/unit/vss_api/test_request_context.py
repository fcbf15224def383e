import asyncio
import io
import json
import logging

import pytest

from vss_api.request_context import RequestContext, RequestContextFilter, current, parse_traceparent, serving
from vss_api.server import JsonFormatter

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_w3c_traceparent_is_kept_as_sent() -> None:
    assert parse_traceparent(TRACEPARENT) == TRACEPARENT
    assert parse_traceparent(f" {TRACEPARENT} ") == TRACEPARENT


def test_a_later_traceparent_version_is_read_by_its_version_00_prefix() -> None:
    later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next"
    assert parse_traceparent(later) == later


@pytest.mark.parametrize("value", [
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # ff is forbidden
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx-injected: 1",
    "not a traceparent",
    "",
])
def test_a_malformed_traceparent_is_dropped(value: str) -> None:
    assert parse_traceparent(value) is None


def test_the_v2_body_id_names_the_request_before_the_x_request_id_header() -> None:
    context = RequestContext.from_headers({"x-request-id": "from-envoy"}, body_id="from-the-client")
    assert context.request_id == "from-the-client"
    assert RequestContext.from_headers({"X-Request-Id": "from-envoy"}).request_id == "from-envoy"


def test_a_request_with_no_id_gets_one_made_up() -> None:
    first, second = RequestContext.from_headers(None), RequestContext.from_headers({})
    assert first.request_id and second.request_id and first.request_id != second.request_id


def test_a_json_body_id_that_is_not_a_string_is_read_as_text() -> None:
    assert RequestContext.from_headers(None, body_id=42).request_id == "42"


def test_tracestate_is_passed_on_only_with_a_valid_traceparent() -> None:
    kept = RequestContext.from_headers({"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"})
    assert kept.headers() == {"x-request-id": kept.request_id, "traceparent": TRACEPARENT,
                              "tracestate": "congo=t61rcWkgMzE"}
    dropped = RequestContext.from_headers({"traceparent": "junk", "tracestate": "congo=t61rcWkgMzE"})
    assert dropped.traceparent is None and dropped.tracestate is None
    assert dropped.headers() == {"x-request-id": dropped.request_id}


def test_an_id_that_cannot_be_a_header_is_kept_for_logs_but_never_put_in_headers() -> None:
    context = RequestContext.from_headers({"traceparent": TRACEPARENT}, body_id="line\r\nbreak")
    assert context.request_id == "line\r\nbreak"
    assert context.headers() == {"traceparent": TRACEPARENT}
    assert RequestContext.from_headers({"x-request-id": "x" * 5000}).request_id != "x" * 5000


def test_log_lines_written_while_serving_a_request_carry_its_id_and_trace_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    logger = logging.getLogger("test_request_context")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with serving(RequestContext.from_headers({"traceparent": TRACEPARENT}, body_id="req-7")):
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["request_id"] == "req-7" and inside["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "request_id" not in outside and "trace_id" not in outside


async def test_concurrent_requests_each_see_their_own_context() -> None:
    both_inside = asyncio.Barrier(2)

    async def serve(request_id: str) -> str | None:
        with serving(RequestContext(request_id)):
            await both_inside.wait()
            seen = current()
            return seen.request_id if seen else None

    assert await asyncio.gather(serve("a"), serve("b")) == ["a", "b"]
    assert current() is None
