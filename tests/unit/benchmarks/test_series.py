"""The time-series benchmark's table: ratios against in-process and the JSON form of the same run, at the same
windows per request, and issue 17's target line."""

from __future__ import annotations

import pytest

from benchmarks.series import TARGETS, markdown, target_lines, with_ratios


def rows(rates: dict[str, float], windows: int = 1) -> list[dict[str, object]]:
    return [{"task": "anomaly", "w": windows, "c": 4, "target": t, "n": 10, "err": 0, "per_s": rates[t],
             "windows_per_s": rates[t] * windows, "p50": 1.0, "p95": 2.0, "p99": 3.0, "cpu_ms": 1.5}
            for t in TARGETS]


def test_each_row_is_compared_with_in_process_and_with_v1_json_at_its_own_concurrency() -> None:
    rates = {"a in-process": 400.0, "b ours v2 gRPC": 300.0, "b ours v2 REST": 200.0, "b ours v1 JSON": 100.0}
    table = with_ratios(rows(rates) + [{**rows(rates)[0], "c": 1, "per_s": 50.0}] +
                        [{**r, "c": 1} for r in rows(rates)[1:]])
    grpc = next(r for r in table if r["target"] == "b ours v2 gRPC" and r["c"] == 4)
    assert grpc["x_a"] == pytest.approx(0.75) and grpc["x_json"] == pytest.approx(3.0)
    grpc_c1 = next(r for r in table if r["target"] == "b ours v2 gRPC" and r["c"] == 1)
    assert grpc_c1["x_a"] == pytest.approx(6.0)


def test_the_markdown_table_has_a_row_per_measurement_with_both_ratios() -> None:
    rates = {"a in-process": 400.0, "b ours v2 gRPC": 300.0, "b ours v2 REST": 200.0, "b ours v1 JSON": 100.0}
    text = markdown(with_ratios(rows(rates)), "# series")
    lines = [line for line in text.splitlines() if line.startswith("| anomaly")]
    assert len(lines) == len(TARGETS)
    assert ("| anomaly | 1 | 4 | b ours v2 gRPC | 10 | 0 | 300.0 | 300 | 1.00 | 2.00 | 3.00 | 1.50 | 0.75 | 3.00 |"
            in lines)


def test_rows_of_64_windows_a_request_are_compared_with_in_process_fed_64_at_once() -> None:
    single = {"a in-process": 4000.0, "b ours v2 gRPC": 200.0, "b ours v2 REST": 200.0, "b ours v1 JSON": 100.0}
    many = {"a in-process": 200.0, "b ours v2 gRPC": 120.0, "b ours v2 REST": 80.0, "b ours v1 JSON": 40.0}
    table = with_ratios(rows(single) + rows(many, windows=64))

    grpc = next(r for r in table if r["target"] == "b ours v2 gRPC" and r["w"] == 64)
    assert grpc["x_a"] == pytest.approx(0.6) and grpc["windows_per_s"] == pytest.approx(7680.0)
    assert target_lines(table) == [
        "target (issue 17) anomaly c=4 v2 gRPC: 64 windows to a request at 0.60x in-process windows/s (>= 0.5x): met",
        "target (issue 17) anomaly c=4 v2 REST: 64 windows to a request at 0.40x in-process windows/s (>= 0.5x): "
        "NOT met"]
