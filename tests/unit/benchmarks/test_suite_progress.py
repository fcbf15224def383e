"""The benchmark suite counts its runs up front, so its progress lines carry an estimate from the first one."""

from __future__ import annotations

from pathlib import Path

from benchmarks.suite import Config, cells_of


def _config(concurrency: list[int], rounds: int) -> Config:
    return Config(tasks=["detection"], targets=["m", "a", "b-grpc"], concurrency=concurrency, requests=10,
                  warmup=1, rounds=rounds, max_seconds_per_cell=1.0, work=Path("w"), out=Path("o"), name="n")


def test_one_paired_run_then_a_closed_loop_per_target_round_and_concurrency_above_one() -> None:
    # m, the floor, runs only in the paired run; a and b-grpc in 2 rounds at c=4 and c=16.
    assert cells_of(_config([1, 4, 16], rounds=2), ["m", "a", "b-grpc"]) == 1 + 2 * 2 * 2
    assert cells_of(_config([4], rounds=3), ["a", "b-grpc"]) == 3 * 2  # no floor, no c=1: no paired run
