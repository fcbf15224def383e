"""The benchmark report: percentiles, merged rounds, ratios against same-run baselines, table rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.results import Measurement, Table, Target, percentile, to_csv, to_markdown, to_text
from benchmarks.suite import evaluate_criteria

TARGETS = [Target("a", "a in-process", "a"), Target("b-grpc", "b ours v2 gRPC", "b"),
           Target("c-json", "c docs v1 JSON", "c")]


def cell(target: str, c: int, latencies_ms: list[float], wall_s: float, task: str = "detection") -> Measurement:
    return Measurement(task, target, c, tuple(x / 1000 for x in latencies_ms), wall_s)


@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], [4.0, 1.0, 3.0, 2.0], list(np.linspace(0, 1, 37))])
@pytest.mark.parametrize("q", [0, 50, 95, 99, 100])
def test_percentile_interpolates_between_ranks_as_numpy_does(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_no_values_is_nan_not_an_error() -> None:
    assert math.isnan(percentile([], 50))


def test_merged_rounds_pool_latencies_and_add_their_wall_times() -> None:
    first = cell("a", 1, [10, 20], wall_s=0.5)
    second = Measurement("detection", "a", 1, (0.03,), 0.25, errors=1, truncated=True, first_error="boom")
    merged = first.merged(second)
    assert merged.requests == 3
    assert merged.throughput == pytest.approx(3 / 0.75)
    assert merged.p(50) == pytest.approx(20)
    assert (merged.errors, merged.truncated, merged.first_error) == (1, True, "boom")


def test_throughput_of_a_cell_that_never_ran_is_nan() -> None:
    assert math.isnan(Measurement("detection", "a", 1).throughput)


def test_table_rows_carry_ratios_against_each_baseline_at_the_same_concurrency() -> None:
    measurements = [cell("a", 1, [10, 10], 0.02), cell("b-grpc", 1, [12, 12], 0.04),
                    cell("c-json", 1, [100, 100], 0.4), cell("a", 4, [20] * 4, 0.02), cell("b-grpc", 4, [30] * 4, 0.04)]
    rows = Table(measurements, TARGETS, ["a", "c-json"], {"detection": 8.0}).rows()
    by = {(r["concurrency"], r["target"]): r for r in rows}
    ours = by[(1, "b ours v2 gRPC")]
    assert ours["x_a"] == pytest.approx(0.5)
    assert ours["x_c-json"] == pytest.approx(10.0)
    assert ours["dp50_a_ms"] == pytest.approx(2.0)
    assert ours["p50_minus_floor_ms"] == pytest.approx(4.0)
    assert math.isnan(float(str(by[(4, "b ours v2 gRPC")]["x_c-json"])))  # no c-json at c=4
    assert [r["target"] for r in rows[:3]] == ["a in-process", "b ours v2 gRPC", "c docs v1 JSON"]


def test_a_floor_given_for_a_target_overrides_the_tasks_floor() -> None:
    table = Table([cell("c-json", 1, [50], 0.05)], TARGETS, [], {"detection": 8.0, "detection/c-json": 20.0})
    assert table.rows()[0]["p50_minus_floor_ms"] == pytest.approx(30.0)


def test_markdown_has_a_header_an_alignment_row_and_a_dash_for_missing_numbers() -> None:
    rows = [{"task": "detection", "req_per_s": 12.345, "p50_ms": math.nan}]
    text = to_markdown(rows, [("task", "task"), ("req_per_s", "req/s"), ("p50_ms", "p50 ms")])
    assert text.splitlines() == ["| task | req/s | p50 ms |", "|---|---:|---:|", "| detection | 12.35 | - |"]


def test_text_table_aligns_numbers_right_and_names_left() -> None:
    rows = [{"target": "a", "n": 5}, {"target": "bbb", "n": 123}]
    lines = to_text(rows, [("target", "target"), ("n", "n")]).splitlines()
    assert lines[0] == "target    n"
    assert lines[2] == "a         5"
    assert lines[3] == "bbb     123"


def test_csv_writes_every_key_with_floats_at_four_decimals() -> None:
    text = to_csv([{"task": "detection", "req_per_s": 1 / 3, "truncated": False}])
    assert text == "task,req_per_s,truncated\ndetection,0.3333,False\n"


def test_criteria_say_met_or_missed_with_the_measured_figure() -> None:
    measurements = [cell("a", 1, [10, 10], 0.02), cell("b-grpc", 1, [12, 12], 0.024),
                    cell("a", 16, [10] * 16, 1.0), cell("b-grpc", 16, [10] * 16, 1.05),
                    cell("c-json", 1, [100, 100], 0.2), cell("c-json", 16, [100] * 16, 10.0)]
    lines = evaluate_criteria(Table(measurements, TARGETS, ["a"], {"detection": 9.0}))
    assert "detection: (b) gRPC throughput at c=16 is 0.95x (a) (target >= 0.9): met" in lines
    assert "detection: (b) gRPC adds 2.0 ms to p50 at c=1 over (a) (target <= 3 ms): met" in lines
    assert "detection: (b) gRPC vs c-json: c=1 8.3x, c=16 9.5x (target >= 5.0x): met" in lines
    assert any(line.startswith("detection: (b) gRPC p50 at c=1 is 12.0 ms, 1.33x") for line in lines)


def test_added_latency_of_paired_cells_is_the_median_of_per_turn_differences() -> None:
    # a noisy machine: turn 3 is slow for both targets; the per-turn differences stay at 2 ms
    ours = Measurement("detection", "b-grpc", 1, (0.012, 0.013, 0.052), 0.077, paired=True)
    base = Measurement("detection", "a", 1, (0.010, 0.011, 0.050), 0.071, paired=True)
    assert ours.added_p50_ms(base) == pytest.approx(2.0)
    unpaired = Measurement("detection", "b-grpc", 1, ours.latencies_s, 0.077)
    assert unpaired.added_p50_ms(base) == pytest.approx(13.0 - 11.0)


def test_the_floor_column_uses_the_model_alone_cell_of_the_same_input_shape() -> None:
    cells = [Measurement("detection", "m", 1, (0.010, 0.030), 0.04, paired=True),
             Measurement("detection", "b-grpc", 1, (0.015, 0.036), 0.051, paired=True)]
    table = Table(cells, TARGETS, [], {"detection": 20.0}, {"b-grpc": "m", "m": "m"})
    ours = next(r for r in table.rows() if r["target"] == "b ours v2 gRPC")
    assert ours["p50_minus_floor_ms"] == pytest.approx(5.5)


def test_criteria_against_the_ultralytics_peer_give_the_c8_ratio_with_p95_and_the_c1_p50() -> None:
    peer = Target("u-fastapi", "u Ultralytics+FastAPI", "u")
    measurements = [cell("b-grpc", 1, [30, 30], 0.06), cell("u-fastapi", 1, [35, 35], 0.07),
                    cell("b-grpc", 8, [200] * 8, 0.26), cell("u-fastapi", 8, [300] * 8, 0.32)]
    lines = evaluate_criteria(Table(measurements, [*TARGETS, peer], ["u-fastapi"], {"detection": 9.0}))
    assert "detection: (b) gRPC throughput vs (u) Ultralytics+FastAPI: c=1 1.17x, c=8 1.23x" in lines
    assert ("detection: (b) gRPC at c=8: 1.23x (u)'s throughput (target >= 1.2), p95 200.0 ms against 300.0 ms "
            "(target lower): met") in lines
    assert "detection: (b) gRPC p50 at c=1 is 30.0 ms, (u) 35.0 ms (-5.0 ms paired; target <= 0): met" in lines
