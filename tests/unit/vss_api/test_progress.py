"""Progress lines: the estimate of what is left, the durations, and how often a line is written."""

from __future__ import annotations

import io

import pytest

from vss_api.progress import Progress, format_duration, progress_line, remaining_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (44.6, "45s"), (60, "1m00s"), (185, "3m05s"), (3720, "1h02m"), (-3, "0s")])
def test_durations_read_in_the_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_estimate_is_the_mean_pace_so_far_times_what_is_left() -> None:
    assert remaining_seconds(done=25, total=100, elapsed=10) == 30
    assert remaining_seconds(done=100, total=100, elapsed=10) == 0
    assert remaining_seconds(done=0, total=100, elapsed=10) is None  # no pace yet


def test_a_line_names_the_work_its_share_elapsed_time_estimate_and_detail() -> None:
    assert progress_line("detector", 40, 96, 10, "epoch 1/2, loss 2.310") == (
        "detector: 40/96 (42%), 10s elapsed, ~14s left; epoch 1/2, loss 2.310")
    assert progress_line("detector", 96, 96, 24) == "detector: 96/96 (100%), 24s elapsed"
    assert progress_line("benchmark", 0, 12, 0) == "benchmark: 0/12 (0%), 0s elapsed"


def test_progress_writes_the_first_and_last_lines_and_otherwise_at_most_every_interval() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress("classifier", 10, stream=out, clock=clock, every_s=5)

    written = []
    for done in range(1, 11):
        clock.now += 1
        written.append(progress.update(done) is not None)

    assert written == [True, False, False, False, False, True, False, False, False, True]
    lines = out.getvalue().splitlines()
    assert lines[0] == "classifier: 1/10 (10%), 1s elapsed, ~9s left"
    assert lines[-1] == "classifier: 10/10 (100%), 10s elapsed"
    assert progress.update(10, force=True) is not None
    assert progress.done == 10


def test_a_log_that_is_no_terminal_gets_fewer_lines_than_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock = FakeClock()
    log, terminal = Progress("x", 100, stream=io.StringIO(), clock=clock), Progress("x", 100, stream=Terminal(),
                                                                                   clock=clock)
    counts = {"log": 0, "terminal": 0}
    for done in range(1, 100):
        clock.now += 1
        counts["log"] += log.update(done) is not None
        counts["terminal"] += terminal.update(done) is not None

    assert counts["log"] < counts["terminal"] < 99
