"""The sinks' pure parts, no network: the backoff's bounds, Retry-After in both of its forms, what a log may say
of a sink's URL, and one set of sink counters per registry however many sinks share it. The sinks against real
servers are in tests/e2e/test_stream_sinks.py."""

from __future__ import annotations

import email.utils

from prometheus_client import CollectorRegistry

from vss_streams.sinks import Backoff, _redacted, retry_after_seconds, sink_metrics


def test_backoff_grows_exponentially_with_full_jitter_and_stays_under_its_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (60, 4.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jittered over the whole range, not pinned at 0


def test_retry_after_reads_seconds_and_http_dates_and_ignores_what_it_cannot_read() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-5") is None


def test_a_logged_url_keeps_scheme_host_and_port_only() -> None:
    assert _redacted("https://hooks.example.com/T000/B000/XXXX?token=s3cret") == "https://hooks.example.com"
    assert _redacted("http://10.0.0.7:8080/hook") == "http://10.0.0.7:8080"
    assert _redacted("mqtts://broker.iot:8883") == "mqtts://broker.iot:8883"


def test_the_sink_counters_are_registered_once_per_registry() -> None:
    registry, other = CollectorRegistry(), CollectorRegistry()
    assert sink_metrics(registry) is sink_metrics(registry)
    assert sink_metrics(other) is not sink_metrics(registry)
    sink_metrics(registry).delivered.labels("s", "mqtt").inc()
    assert registry.get_sample_value("vss_stream_sink_delivered_total", {"stream": "s", "sink": "mqtt"}) == 1
