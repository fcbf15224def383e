"""Measurements and how they are reported: latency percentiles, throughput, ratios against baselines
measured in the same run, and the table as text, Markdown and CSV, plus a chart."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Measurement:
    """The recorded requests of one target at one concurrency (rounds merged), warm-up excluded."""

    task: str
    target: str
    concurrency: int
    latencies_s: tuple[float, ...] = ()
    wall_s: float = 0.0
    errors: int = 0
    truncated: bool = False
    first_error: str = ""
    paired: bool = False  # latencies in turn order, request i taken in the same turn as other paired cells'
    round_throughputs: tuple[float, ...] = ()  # req/s of each interleaved round, in round order

    def merged(self, other: Measurement) -> Measurement:
        """Two rounds as one: latencies pooled, wall times added, so throughput is requests / busy time."""
        return Measurement(self.task, self.target, self.concurrency, self.latencies_s + other.latencies_s,
                           self.wall_s + other.wall_s, self.errors + other.errors,
                           self.truncated or other.truncated, self.first_error or other.first_error,
                           round_throughputs=self.round_throughputs + other.round_throughputs)

    def round_ratios(self, baseline: Measurement) -> list[float]:
        """Throughput ratio round by round: each round ran the targets back to back, so a ratio within a
        round sees one state of a noisy machine; their spread shows how much the noise moved."""
        return [a / b for a, b in zip(self.round_throughputs, baseline.round_throughputs, strict=False) if b > 0]

    def added_p50_ms(self, baseline: Measurement) -> float:
        """Latency added over `baseline`: for paired cells the median of the per-turn differences (what the
        machine's noise cancels out of), else the difference of the medians."""
        if self.paired and baseline.paired and self.requests == baseline.requests and not (
                self.errors or baseline.errors):
            return percentile([a - b for a, b in zip(self.latencies_s, baseline.latencies_s, strict=True)],
                              50) * 1000
        return self.p(50) - baseline.p(50)

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else math.nan

    def p(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return percentile(self.latencies_s, q) * 1000


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    group: str  # a: in-process ceiling, b: ours served, c: KServe docs baselines


@dataclass
class Table:
    """Rows of (task, concurrency, target) with ratios against `baselines` (target keys) of the same
    task and concurrency, and p50 above the model's own compute (`floors_ms` by task, or by target)."""

    measurements: list[Measurement]
    targets: Sequence[Target]
    baselines: Sequence[str]
    floors_ms: Mapping[str, float] = field(default_factory=dict)

    def _find(self, task: str, target: str, concurrency: int) -> Measurement | None:
        for m in self.measurements:
            if (m.task, m.target, m.concurrency) == (task, target, concurrency):
                return m
        return None

    floor_targets: Mapping[str, str] = field(default_factory=dict)  # target → its model-alone target

    def floor_cell(self, m: Measurement) -> Measurement | None:
        target = self.floor_targets.get(m.target)
        return self._find(m.task, target, 1) if target and m.concurrency == 1 else None

    def floor_of(self, m: Measurement) -> float:
        return self.floors_ms.get(f"{m.task}/{m.target}", self.floors_ms.get(m.task, math.nan))

    def rows(self) -> list[dict[str, object]]:
        labels = {t.key: t.label for t in self.targets}
        order = {t.key: i for i, t in enumerate(self.targets)}
        rows = []
        for m in sorted(self.measurements, key=lambda m: (m.task, m.concurrency, order.get(m.target, 99))):
            row: dict[str, object] = {
                "task": m.task, "concurrency": m.concurrency, "target": labels.get(m.target, m.target),
                "requests": m.requests, "errors": m.errors, "req_per_s": m.throughput,
                "p50_ms": m.p(50), "p95_ms": m.p(95), "p99_ms": m.p(99),
            }
            for base in self.baselines:
                ref = self._find(m.task, base, m.concurrency)
                row[f"x_{base}"] = m.throughput / ref.throughput if ref and ref.throughput > 0 else math.nan
                row[f"dp50_{base}_ms"] = m.added_p50_ms(ref) if ref else math.nan
            floor = self.floor_cell(m)
            row["p50_minus_floor_ms"] = m.added_p50_ms(floor) if floor else m.p(50) - self.floor_of(m)
            row["truncated"] = m.truncated
            rows.append(row)
        return rows

    def columns(self) -> list[tuple[str, str]]:
        """(key, header) of the printed columns."""
        cols = [("task", "task"), ("concurrency", "c"), ("target", "target"), ("requests", "n"),
                ("errors", "err"), ("req_per_s", "req/s"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
                ("p99_ms", "p99 ms")]
        for base in self.baselines:
            cols.append((f"x_{base}", f"x {base}"))
        if self.baselines:
            cols.append((f"dp50_{self.baselines[0]}_ms", f"+p50 vs {self.baselines[0]} ms"))
        cols.append(("p50_minus_floor_ms", "p50-floor ms"))
        return cols


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def to_markdown(rows: Iterable[Mapping[str, object]], columns: Sequence[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "|".join("---" if k in ("task", "target") else "---:" for k, _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k, "")) for k, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def to_text(rows: Iterable[Mapping[str, object]], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[h for _, h in columns]] + [[_cell(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    left = {i for i, (k, _) in enumerate(columns) if k in ("task", "target")}
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) if i in left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def to_csv(rows: Iterable[Mapping[str, object]]) -> str:
    rows = list(rows)
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_chart(rows: Sequence[Mapping[str, object]], path: Path, title: str) -> None:
    """Per task: throughput (bars) and p95 latency (bars) by concurrency, one colour per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({str(r["task"]) for r in rows})
    palette = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    colour = {t: palette[i % len(palette)] for i, t in enumerate(dict.fromkeys(str(r["target"]) for r in rows))}
    fig, axes = plt.subplots(len(tasks), 2, figsize=(13, 4.2 * len(tasks)), squeeze=False)
    for t, task in enumerate(tasks):
        mine = [r for r in rows if r["task"] == task]
        targets = list(dict.fromkeys(str(r["target"]) for r in mine))
        levels = sorted({int(str(r["concurrency"])) for r in mine})
        width = 0.8 / max(1, len(targets))
        for col, (key, label) in enumerate((("req_per_s", "requests/s"), ("p95_ms", "p95 latency (ms)"))):
            ax = axes[t][col]
            for i, target in enumerate(targets):
                values = []
                for c in levels:
                    found = [r[key] for r in mine if r["target"] == target and r["concurrency"] == c]
                    values.append(float(str(found[0])) if found else math.nan)
                ax.bar([x + i * width for x in range(len(levels))], values, width, label=target,
                       color=colour[target])
            ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(levels))])
            ax.set_xticklabels([f"c={c}" for c in levels])
            ax.set_ylabel(label)
            ax.set_title(f"{task}: {label}")
            if key == "p95_ms":
                ax.set_yscale("log")
            ax.grid(axis="y", alpha=0.3)
        axes[t][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
