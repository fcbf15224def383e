"""Prometheus' answers and the analysis query of one version, as the promql and Prometheus client tests use them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vss_operator.promql import VersionQuery

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    """An instant-vector answer of /api/v1/query with these (labels, value) samples, all at AT."""
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [AT.timestamp(), value]} for labels, value in samples]}}


def make_query(endpoint: str = "default", **kw: Any) -> VersionQuery:
    return VersionQuery(endpoint=endpoint, model_name="yolo", version="v2", window_s=kw.pop("window_s", 60.0),
                        **kw)
