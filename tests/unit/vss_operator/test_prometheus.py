"""Prometheus client: it sends the analysis queries over HTTP; a failure to read an answer is an AnalysisError
(the rollout pauses on it), never no data. Tested against a small HTTP server on loopback that answers like
Prometheus' API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.unit.vss_operator.prometheus_answers import AT, make_query, vector
from vss_operator.prometheus import PrometheusClient
from vss_operator.promql import (
    AnalysisError,
    VersionSample,
    p95_query,
    requests_query,
)


def client_of(url: str, session: Any = None) -> PrometheusClient:
    return PrometheusClient(session, endpoints={"default": url})


@dataclass
class FakePrometheus:
    url: str
    answer: Callable[[web.Request], Any]
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def fake_prometheus() -> AsyncIterator[FakePrometheus]:
    fake = FakePrometheus(url="", answer=lambda _request: vector())

    async def query(request: web.Request) -> web.StreamResponse:
        fake.seen.append(dict(request.query))
        result = fake.answer(request)
        if asyncio.iscoroutine(result):
            result = await result
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result)

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def _by_query(request: web.Request) -> dict[str, Any]:
    if request.query["query"].startswith("sum by (status)"):
        return vector(({"status": "success"}, "95"), ({"status": "server_error"}, "5"))
    return vector(({}, "0.031"))


async def test_the_client_reads_a_versions_error_ratio_and_p95(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = _by_query
    async with client_of(fake_prometheus.url + "/") as client:
        sample = await client.sample(make_query(), AT)
    assert sample == VersionSample(requests=100.0, server_errors=5.0, client_errors=0.0, p95_ms=31.0)
    assert {s["time"] for s in fake_prometheus.seen} == {f"{AT.timestamp():.3f}"}
    assert {s["query"] for s in fake_prometheus.seen} == {requests_query(make_query()), p95_query(make_query())}


async def test_a_prometheus_error_answer_is_an_analysis_error_that_quotes_nothing_it_sent(
        fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = lambda _r: web.json_response(
        {"status": "error", "errorType": "bad_data", "error": "invalid parameter"}, status=400)
    async with client_of(fake_prometheus.url) as client:
        sample = await client.sample(make_query(), AT)
    assert sample == AnalysisError("Prometheus endpoint 'default' answered with an error: the query failed (bad_data)")


async def test_a_server_error_without_json_is_an_analysis_error(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = lambda _r: web.Response(status=503, text="overloaded")
    async with client_of(fake_prometheus.url) as client:
        sample = await client.sample(make_query(), AT)
    assert isinstance(sample, AnalysisError) and "HTTP 503" in sample.reason and "overloaded" not in sample.reason


async def test_a_slow_prometheus_is_an_analysis_error_after_the_timeout(fake_prometheus: FakePrometheus) -> None:
    never = asyncio.Event()

    async def hang(_request: web.Request) -> dict[str, Any]:
        await never.wait()
        return vector()

    fake_prometheus.answer = hang
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with client_of(fake_prometheus.url) as client:
            sample = await client.sample(make_query(timeout_s=0.2), AT)
    finally:
        never.set()  # lets the server's handler end, so the fixture's shutdown does not wait for it
    assert isinstance(sample, AnalysisError) and "did not answer within 0.2s" in sample.reason
    assert loop.time() - started < 2.0


async def test_an_unreachable_prometheus_is_an_analysis_error_naming_the_endpoint_not_its_url() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        async with client_of(url) as client:
            sample = await client.sample(make_query(), AT)
    assert isinstance(sample, AnalysisError) and "'default' could not be queried" in sample.reason
    assert "127.0.0.1" not in sample.reason


async def test_an_endpoint_the_operator_is_not_configured_with_is_never_fetched(
        fake_prometheus: FakePrometheus) -> None:
    """A VSSModel names an endpoint; only the operator's own configuration says where that is."""
    async with client_of(fake_prometheus.url) as client:
        sample = await client.sample(make_query("http://attacker.example"), AT)
    assert sample == AnalysisError("Prometheus endpoint 'http://attacker.example' is not one the operator is "
                                   "configured with (it has: default)")
    assert fake_prometheus.seen == []


async def test_a_shared_session_stays_open_after_the_client_is_done(fake_prometheus: FakePrometheus) -> None:
    import aiohttp

    fake_prometheus.answer = _by_query
    async with aiohttp.ClientSession() as session:
        client = client_of(fake_prometheus.url, session)
        assert isinstance(await client.sample(make_query(), AT), VersionSample)
        await client.close()
        assert not session.closed
