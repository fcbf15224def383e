"""promql: the analysis queries of a version and the reading of Prometheus' answers (pure, no network)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.unit.vss_operator.prometheus_answers import make_query, vector
from vss_api.vssmodel import VSSModelSpec
from vss_operator.promql import (
    NoData,
    PrometheusError,
    VersionQuery,
    VersionSample,
    p95_query,
    parse_vector,
    query_for,
    requests_query,
    sample_from,
    selector,
    window,
)

# --- PromQL --------------------------------------------------------------------------------------------


def test_the_selector_names_model_version_component_and_extra_labels() -> None:
    query = make_query(labels={"namespace": "vision"})
    assert selector(query) == '{model_name="yolo",version="v2",component="predictor",namespace="vision"}'


def test_label_values_are_escaped_for_promql() -> None:
    query = VersionQuery(endpoint="default", model_name='a"b\\c', version="v1", window_s=1)
    assert selector(query).startswith('{model_name="a\\"b\\\\c",')


def test_windows_are_whole_milliseconds() -> None:
    assert (window(60), window(2.5), window(0.0001)) == ("60000ms", "2500ms", "1ms")


def test_the_requests_query_sums_the_counter_by_status_over_the_window() -> None:
    assert requests_query(make_query()) == (
        'sum by (status) (increase(inference_requests_total{model_name="yolo",version="v2",'
        'component="predictor"}[60000ms]))')


def test_the_latency_query_reads_the_whole_request_stage_of_the_component() -> None:
    assert p95_query(make_query()) == (
        'histogram_quantile(0.95, sum by (le) (rate(inference_duration_seconds_bucket{model_name="yolo",'
        'version="v2",component="predictor",stage="predict"}[60000ms])))')
    assert 'component="transformer",stage="total"' in p95_query(make_query(component="transformer"))


def test_the_query_follows_the_spec() -> None:
    spec = VSSModelSpec.model_validate({
        "task": "detection", "version": "v2",
        "versions": [{"name": "v1", "storageUri": "a.onnx"}, {"name": "v2", "storageUri": "b.onnx"}],
        "rollout": {"analysis": {"interval": "90s", "component": "transformer", "prometheus": {
            "endpoint": "central", "timeout": "2s", "labels": {"namespace": "vision"}}}}})
    assert query_for(spec, "yolo", "v2") == VersionQuery(
        endpoint="central", model_name="yolo", version="v2", window_s=90.0, component="transformer",
        timeout_s=2.0, labels={"namespace": "vision"})


# --- reading answers -----------------------------------------------------------------------------------


def test_an_instant_vector_reads_as_labels_and_values() -> None:
    answer = vector(({"status": "success"}, "97"), ({"status": "server_error"}, "3.5"))
    assert parse_vector(answer) == [({"status": "success"}, 97.0), ({"status": "server_error"}, 3.5)]


@pytest.mark.parametrize("answer", [
    {"status": "error", "errorType": "bad_data", "error": "parse error"},
    {"status": "success", "data": {"resultType": "matrix", "result": []}},
    {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
    ["not", "an", "object"],
], ids=["an error answer", "a range answer", "a sample without value", "a list"])
def test_answers_that_are_not_instant_vectors_are_refused(answer: Any) -> None:
    with pytest.raises(PrometheusError):
        parse_vector(answer)


def test_a_sample_counts_server_errors_against_all_requests() -> None:
    requests = [({"status": "success"}, 90.0), ({"status": "server_error"}, 6.0),
                ({"status": "client_error"}, 4.0)]
    sample = sample_from(make_query(), requests, [({}, 0.042)])
    assert sample == VersionSample(requests=100.0, server_errors=6.0, client_errors=4.0, p95_ms=42.0)
    assert isinstance(sample, VersionSample) and math.isclose(sample.error_ratio, 0.06)


def test_no_requests_in_the_window_is_no_data() -> None:
    assert isinstance(sample_from(make_query(), [], []), NoData)
    assert isinstance(sample_from(make_query(), [({"status": "success"}, 0.0)], [({}, math.nan)]), NoData)


def test_a_nan_quantile_reads_as_no_latency() -> None:
    sample = sample_from(make_query(), [({"status": "success"}, 12.0)], [({}, math.nan)])
    assert isinstance(sample, VersionSample) and sample.p95_ms is None


# --- the client against an HTTP server that answers like Prometheus ------------------------------------


def test_a_prometheus_error_answer_keeps_its_free_text_out_of_the_message() -> None:
    """The message goes into status and Events; what Prometheus said goes to the operator's log only."""
    with pytest.raises(PrometheusError) as raised:
        parse_vector({"status": "error", "errorType": "bad_data", "error": "secret internal detail"})
    assert str(raised.value) == "the query failed (bad_data)"
    assert raised.value.detail == "secret internal detail"
