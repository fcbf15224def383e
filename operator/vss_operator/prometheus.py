"""The one module that talks to Prometheus: it sends the analysis queries of `promql` through the HTTP
API to the endpoints the operator is configured with, and turns every failure into an `AnalysisError`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime

import aiohttp

from vss_operator.promql import (
    AnalysisError,
    PrometheusError,
    Sample,
    VersionQuery,
    p95_query,
    parse_vector,
    requests_query,
    sample_from,
)

DEFAULT_ENDPOINTS = {"default": "http://prometheus.monitoring:9090"}
log = logging.getLogger(__name__)


class PrometheusClient:
    """Reads samples through Prometheus' HTTP API over one shared aiohttp session, from `endpoints` (name ->
    base URL) only: the operator's configuration, never a URL from a VSSModel.

    The session belongs to the caller (the operator opens one at startup), or to the client when it is
    used as an async context manager."""

    def __init__(self, session: aiohttp.ClientSession | None = None, *,
                 endpoints: Mapping[str, str] | None = None) -> None:
        self._session = session
        self._owns_session = session is None
        self.endpoints = dict(DEFAULT_ENDPOINTS if endpoints is None else endpoints)

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
        """What `query.version` did in the window that ends at `at`; an AnalysisError, never an exception,
        when the endpoint is unknown or Prometheus is slow, unreachable or answers nonsense. Its reason names
        the endpoint, not its URL, and quotes nothing Prometheus sent; the operator's log has the detail."""
        where = f"Prometheus endpoint {query.endpoint!r}"
        url = self.endpoints.get(query.endpoint)
        if url is None:
            known = ", ".join(sorted(self.endpoints)) or "none"
            return AnalysisError(f"{where} is not one the operator is configured with (it has: {known})")
        try:
            requests, p95 = await asyncio.gather(
                self.instant(url, requests_query(query), at, query.timeout_s),
                self.instant(url, p95_query(query), at, query.timeout_s))
        except TimeoutError:
            return AnalysisError(f"{where} did not answer within {query.timeout_s:g}s")
        except aiohttp.ClientError as exc:
            log.warning("Prometheus query failed", extra={"endpoint": query.endpoint, "url": url, "error": str(exc)})
            return AnalysisError(f"{where} could not be queried ({type(exc).__name__})")
        except PrometheusError as exc:
            log.warning("Prometheus answered with an error", extra={"endpoint": query.endpoint, "url": url,
                                                                    "error": exc.detail or str(exc)})
            return AnalysisError(f"{where} answered with an error: {exc}")
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
