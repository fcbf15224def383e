"""The time-series benchmark's table: ratios against in-process and the JSON form of the same run."""

from __future__ import annotations

import pytest

from benchmarks.series import TARGETS, markdown, with_ratios


def rows(rates: dict[str, float]) -> list[dict[str, object]]:
    return [{"task": "anomaly", "c": 4, "target": t, "n": 10, "err": 0, "per_s": rates[t], "p50": 1.0, "p95": 2.0,
             "p99": 3.0} for t in TARGETS]


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
    assert "| anomaly | 4 | b ours v2 gRPC | 10 | 0 | 300.0 | 1.00 | 2.00 | 3.00 | 0.75 | 3.00 |" in lines
