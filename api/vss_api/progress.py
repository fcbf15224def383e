"""Progress of long work (model training, benchmark runs): how much of a known total is done, how long it
took, and an estimate of what is left from the mean pace so far, as plain lines on stderr. Plain lines, never
a redrawn bar: two training processes share one terminal, and a CI log keeps every line as it was written."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

# A line at most this often, unless forced (the first, the last, an epoch's end): often enough for a person
# watching a terminal, and a CI log of a long build stays a few hundred lines.
TERMINAL_EVERY_S = 2.0
LOG_EVERY_S = 15.0


def format_duration(seconds: float) -> str:
    """`45s`, `3m05s`, `1h02m`: whole seconds, the two largest units."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def remaining_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the mean pace so far; None before anything is done (no pace to go by)."""
    if done <= 0 or total <= 0 or elapsed < 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


def progress_line(what: str, done: float, total: float, elapsed: float, detail: str = "") -> str:
    """`detector: 40/96 (42%), 10s elapsed, ~14s left; epoch 1/2, loss 2.310`."""
    share = f" ({done / total:.0%})" if total > 0 else ""
    left = remaining_seconds(done, total, elapsed)
    estimate = "" if left is None or done >= total else f", ~{format_duration(left)} left"
    line = f"{what}: {done:g}/{total:g}{share}, {format_duration(elapsed)} elapsed{estimate}"
    return f"{line}; {detail}" if detail else line


class Progress:
    """Reports `done` of `total` units of `what`: a line on each `update` at most every `every_s` seconds
    (more often on a terminal than in a log), and always when forced, at the first unit and at the last."""

    def __init__(self, what: str, total: float, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, every_s: float | None = None) -> None:
        self.what = what
        self.total = total
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        if every_s is None:
            every_s = TERMINAL_EVERY_S if _isatty(self._stream) else LOG_EVERY_S
        self._every_s = every_s
        self._started = clock()
        self._last_line: float | None = None
        self.done: float = 0

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def update(self, done: float, detail: str = "", *, force: bool = False) -> str | None:
        """Report `done` units; the line written, or None when it was too soon for one."""
        now = self._clock()
        self.done = done
        due = (force or self._last_line is None or done >= self.total
               or now - self._last_line >= self._every_s)
        if not due:
            return None
        self._last_line = now
        line = progress_line(self.what, done, self.total, now - self._started, detail)
        print(line, file=self._stream, flush=True)
        return line


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
