"""The names of every series the project's processes export, read from the metric objects they register (the
serving processes, the operator, the stream workers and their sinks): what the dashboard and the alert rules may
name. A query that names anything else is a typo or a metric that was renamed."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from vss_api.serving_metrics import ServingMetrics
from vss_operator.metrics import ModelMetrics
from vss_streams.sinks import SinkMetrics
from vss_streams.worker import StreamMetrics

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# The operator's leader gauge lives in its daemon's state; Prometheus adds `up` to every target.
OTHERS = frozenset({"vss_operator_leader", "up"})
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def exported_series() -> frozenset[str]:
    registry = CollectorRegistry()
    ServingMetrics.create(registry)
    ModelMetrics(registry)
    StreamMetrics(registry)
    SinkMetrics(registry)
    names = {f"{family.name}{suffix}" for family in registry.collect() for suffix in SUFFIXES[family.type]}
    return frozenset(names | OTHERS)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: its identifiers once strings, label matchers, ranges,
    grouping clauses and function names are taken out."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = _GROUPING.sub(" ", bare)
    return {name for name in _IDENT.findall(bare) if name.lower() not in _KEYWORDS}
