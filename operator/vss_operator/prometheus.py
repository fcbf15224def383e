"""The one module that talks to Prometheus: it sends the analysis queries of `promql` through the HTTP
API and turns every failure into no data."""

from __future__ import annotations

import asyncio
from datetime import datetime

import aiohttp

from vss_operator.promql import (
    NoData,
    PrometheusError,
    Sample,
    VersionQuery,
    p95_query,
    parse_vector,
    requests_query,
    sample_from,
)


class PrometheusClient:
    """Reads samples through Prometheus' HTTP API over one shared aiohttp session.

    The session belongs to the caller (the operator opens one at startup), or to the client when it is
    used as an async context manager."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> PrometheusClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def sample(self, query: VersionQuery, at: datetime) -> Sample:
        """What `query.version` did in the window that ends at `at`; NoData, never an exception, when
        Prometheus is slow, unreachable or answers nonsense."""
        try:
            requests, p95 = await asyncio.gather(
                self.instant(query.url, requests_query(query), at, query.timeout_s),
                self.instant(query.url, p95_query(query), at, query.timeout_s))
        except TimeoutError:
            return NoData(f"Prometheus at {query.url} did not answer within {query.timeout_s:g}s")
        except aiohttp.ClientError as exc:
            return NoData(f"Prometheus at {query.url} could not be queried: {exc or type(exc).__name__}")
        except PrometheusError as exc:
            return NoData(f"Prometheus at {query.url} answered with an error: {exc}")
        return sample_from(query, requests, p95)

    async def instant(self, url: str, promql: str, at: datetime, timeout_s: float
                      ) -> list[tuple[dict[str, str], float]]:
        """One instant query evaluated at `at`."""
        if self._session is None:
            raise RuntimeError("PrometheusClient needs a session: pass one or use `async with`")
        params = {"query": promql, "time": f"{at.timestamp():.3f}", "timeout": f"{timeout_s:g}s"}
        async with asyncio.timeout(timeout_s):
            async with self._session.get(f"{url.rstrip('/')}/api/v1/query", params=params) as reply:
                if reply.status >= 500 and reply.content_type != "application/json":
                    raise PrometheusError(f"HTTP {reply.status}")
                try:
                    payload = await reply.json(content_type=None)
                except ValueError as exc:
                    raise PrometheusError(f"HTTP {reply.status} without a JSON body") from exc
        return parse_vector(payload)
