"""What the fuzz tests sent and got, per operation: requests, answers by status class, server errors and hangs,
printed as a table after the module's tests (and appended to the file VSS_FUZZ_REPORT names, if set)."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class FuzzTally:
    protocol: str
    examples: int
    scale: str
    sent: Counter[str] = field(default_factory=Counter)
    statuses: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    server_errors: Counter[str] = field(default_factory=Counter)
    hangs: Counter[str] = field(default_factory=Counter)

    def answered(self, row: str, status: str | int, *, server_error: bool | None = None) -> None:
        """One answer; an HTTP status counts as a server error from 500 up, a gRPC one where the caller says."""
        self.sent[row] += 1
        if isinstance(status, int):
            self.statuses[row][f"{status // 100}xx"] += 1
            server_error = status >= 500 if server_error is None else server_error
        else:
            self.statuses[row][status] += 1
        if server_error:
            self.server_errors[row] += 1

    def hang(self, row: str) -> None:
        self.sent[row] += 1
        self.hangs[row] += 1

    def table(self) -> str:
        failure = "5xx" if self.protocol == "REST" else "INTERNAL/UNKNOWN"
        lines = [f"### {self.protocol} fuzz ({self.scale}: {self.examples} examples per test)", "",
                 f"| operation | requests | answers | {failure} | hangs |", "|---|---:|---|---:|---:|"]
        for row in sorted(self.sent):
            answers = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses[row].items()))
            lines.append(f"| {row} | {self.sent[row]} | {answers} | {self.server_errors[row]} | "
                         f"{self.hangs[row]} |")
        lines.append(f"| **all** | {sum(self.sent.values())} | | {sum(self.server_errors.values())} | "
                     f"{sum(self.hangs.values())} |")
        return "\n".join(lines) + "\n"

    def report(self, config: pytest.Config) -> None:
        table = self.table()
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
                reporter.write_line("")
                for line in table.splitlines():
                    reporter.write_line(line)
        target = os.environ.get("VSS_FUZZ_REPORT")
        if target:
            with Path(target).open("a") as out:
                out.write(table + "\n")
