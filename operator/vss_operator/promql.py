"""What the canary analysis asks Prometheus and what the answers mean, as plain data: the PromQL of a
version's requests by outcome and its p95 latency over an analysis window, and the parsing of the answers
into a `Sample`. No I/O here (`prometheus.py` sends the queries), so the rollout decisions that read
samples depend on no network library.

The metrics are the data plane's (`vss_api.metrics`): the counter `inference_requests_total
{model_name, version, component, status}` and the histogram `inference_duration_seconds{model_name,
version, component, stage}`; the analysis reads the stage that spans a whole request (`WHOLE_REQUEST`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vss_api.metrics import CLIENT_ERROR, DURATION, REQUESTS_TOTAL, SERVER_ERROR, WHOLE_REQUEST, Component
from vss_api.vssmodel import VSSModelSpec, parse_duration


@dataclass(frozen=True)
class VersionQuery:
    """Where and what to ask: one model version's metrics over the `window_s` seconds before `at`."""

    endpoint: str  # the name of one of the operator's configured Prometheus endpoints
    model_name: str
    version: str
    window_s: float
    component: Component = "predictor"
    timeout_s: float = 5.0
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionSample:
    """What the version did in the window. Counts come from `increase()`, so they are extrapolated to the
    window's edges and need not be whole numbers."""

    requests: float
    server_errors: float
    client_errors: float
    p95_ms: float | None  # None: no latency observed in the window

    @property
    def error_ratio(self) -> float:
        """Share of requests that ended in a server error; client errors are the caller's, not the model's."""
        return self.server_errors / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class NoData:
    """Nothing to judge: the version got no requests (or too few) in the window."""

    reason: str


@dataclass(frozen=True)
class AnalysisError:
    """The metrics could not be read (Prometheus unreachable, slow, erroring, or an unknown endpoint): says
    nothing about the canary, so it pauses the rollout instead of counting against it. `reason` is ours,
    never text from the response, since it goes into status and Events."""

    reason: str


Sample = VersionSample | NoData | AnalysisError


class PrometheusError(Exception):
    """Prometheus answered with an error or with something that is not a query result. The message is ours
    (safe for status and Events); `detail` is what Prometheus said, for the operator's log only."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def query_for(spec: VSSModelSpec, model_name: str, version: str) -> VersionQuery:
    """The query of `version` that the spec's analysis block describes."""
    analysis = spec.rollout.analysis
    return VersionQuery(
        endpoint=analysis.prometheus.endpoint, model_name=model_name, version=version,
        window_s=parse_duration(analysis.interval), component=analysis.component,
        timeout_s=parse_duration(analysis.prometheus.timeout), labels=dict(analysis.prometheus.labels))


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(query: VersionQuery, **extra: str) -> str:
    """`{model_name="yolo",version="v2",component="predictor",...}` with every value quoted for PromQL."""
    matchers = {"model_name": query.model_name, "version": query.version, "component": query.component,
                **query.labels, **extra}
    return "{" + ",".join(f"{name}={_quote(value)}" for name, value in matchers.items()) + "}"


def window(seconds: float) -> str:
    """A PromQL range: whole milliseconds, so that short test intervals stay exact."""
    return f"{max(1, round(seconds * 1000))}ms"


def requests_query(query: VersionQuery) -> str:
    """Requests in the window by outcome: one series per `status` that occurred."""
    return f"sum by (status) (increase({REQUESTS_TOTAL}{selector(query)}[{window(query.window_s)}]))"


def p95_query(query: VersionQuery) -> str:
    """95th percentile of the request duration in the window, in seconds (NaN when nothing was observed)."""
    buckets = f"{DURATION}_bucket{selector(query, stage=WHOLE_REQUEST[query.component])}"
    return f"histogram_quantile(0.95, sum by (le) (rate({buckets}[{window(query.window_s)}])))"


def parse_vector(payload: Any) -> list[tuple[dict[str, str], float]]:
    """The (labels, value) pairs of an instant-vector answer of `/api/v1/query`."""
    if not isinstance(payload, dict):
        raise PrometheusError("the answer is not a JSON object")
    if payload.get("status") != "success":
        # errorType is one of Prometheus' fixed names (bad_data, timeout, execution, ...); the free-text
        # `error` stays out of what we report.
        kind = payload.get("errorType")
        kind = kind if isinstance(kind, str) and kind.isidentifier() else "error"
        raise PrometheusError(f"the query failed ({kind})", detail=str(payload.get("error", ""))[:1024])
    data = payload.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(
            data.get("result"), list):
        raise PrometheusError("the answer is not an instant vector")
    out: list[tuple[dict[str, str], float]] = []
    for item in data["result"]:
        try:
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            out.append((labels, float(item["value"][1])))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise PrometheusError("a malformed sample in the answer") from exc
    return out


def sample_from(query: VersionQuery, requests: list[tuple[dict[str, str], float]],
                p95: list[tuple[dict[str, str], float]]) -> Sample:
    """Combine the two answers into what the version did, or why there is nothing to judge."""
    by_status = {labels.get("status", ""): value for labels, value in requests if math.isfinite(value)}
    total = sum(by_status.values())
    if total <= 0:
        return NoData(f"no requests to version {query.version} in the last {window(query.window_s)} "
                      "(is traffic reaching it, is Prometheus scraping it?)")
    seconds = next((v for _, v in p95 if math.isfinite(v)), None)
    return VersionSample(
        requests=total, server_errors=by_status.get(SERVER_ERROR, 0.0),
        client_errors=by_status.get(CLIENT_ERROR, 0.0),
        p95_ms=None if seconds is None else seconds * 1000.0)
