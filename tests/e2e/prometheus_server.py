"""A real Prometheus process for tests (the Debian package `prometheus`, or the binary named by
$VSS_PROMETHEUS): scrapes every second, takes its targets from a file that tests rewrite, and is waited
for with deadlines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCRAPE_INTERVAL_S = 1

CONFIG = """\
global:
  scrape_interval: {interval}s
  scrape_timeout: {interval}s
  evaluation_interval: {interval}s
scrape_configs:
  - job_name: vss
    file_sd_configs:
      - files: [{targets}]
        refresh_interval: 1s
"""


def binary() -> str | None:
    return os.environ.get("VSS_PROMETHEUS") or shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(what: str, probe: Callable[[], T | None], deadline_s: float, every_s: float = 0.2) -> T:
    """Poll `probe` until it returns something other than None, or fail after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not after {deadline_s:.0f}s")
        time.sleep(every_s)


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    targets_file: Path
    log: Path
    targets: dict[str, dict[str, str]] = field(default_factory=dict)

    def scrape(self, target: str, **labels: str) -> None:
        """Add `host:port` to the scraped targets (its /metrics), with extra target labels."""
        self.targets[target] = labels
        self.set_targets(self.targets)

    def set_targets(self, targets: dict[str, dict[str, str]]) -> None:
        """Scrape exactly TARGETS (`host:port` → target labels), as a service discovery's refresh does."""
        self.targets = dict(targets)
        groups = [{"targets": [t], "labels": lbl} for t, lbl in self.targets.items()]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)  # atomic: Prometheus never reads half a file

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        params = {"query": promql, **({} if at is None else {"time": f"{at:.3f}"})}
        with urllib.request.urlopen(
                f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10) as reply:
            payload: dict[str, Any] = json.load(reply)
        assert payload["status"] == "success", payload
        return [(r["metric"], float(r["value"][1])) for r in payload["data"]["result"]]

    def query_range(self, promql: str, start: float, end: float, step_s: float
                    ) -> list[tuple[dict[str, str], list[float]]]:
        """What Grafana asks for a panel: each series of the range query with its values."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
        with urllib.request.urlopen(
                f"{self.url}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout=10) as reply:
            payload: dict[str, Any] = json.load(reply)
        assert payload["status"] == "success", payload
        return [(r["metric"], [float(v) for _, v in r["values"]]) for r in payload["data"]["result"]]

    def label_values(self, label: str, match: str) -> list[str]:
        """Grafana's `label_values(MATCH, LABEL)`: the values of LABEL on the series MATCH selects."""
        params = {"match[]": match}
        with urllib.request.urlopen(
                f"{self.url}/api/v1/label/{label}/values?{urllib.parse.urlencode(params)}", timeout=10) as reply:
            payload: dict[str, Any] = json.load(reply)
        assert payload["status"] == "success", payload
        return [str(v) for v in payload["data"]]

    def scraped_after(self, instance: str, moment: float, deadline_s: float = 30.0) -> float:
        """Wait for a scrape of `instance` that started after `moment` (unix time); its timestamp."""
        def probe() -> float | None:
            # timestamp() of a plain selector is the sample's own time (of an expression, the query's)
            found = self.query(f'timestamp(up{{instance="{instance}"}})')
            if not found or found[0][1] <= moment:
                return None
            up = self.query(f'up{{instance="{instance}"}}', at=found[0][1])
            return found[0][1] if up and up[0][1] == 1 else None

        return wait_until(f"a scrape of {instance} after {moment:.3f}", probe, deadline_s)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def prometheus_server(workdir: Path, deadline_s: float = 60.0) -> Iterator[PrometheusServer]:
    path = binary()
    if path is None:
        # A missing Prometheus fails the tests that need it, never skips them (`make test` installs it).
        raise FileNotFoundError("no prometheus binary on PATH: `make system` (part of `make test`) installs "
                                "Debian's prometheus package; or set VSS_PROMETHEUS to a prometheus binary")
    workdir.mkdir(parents=True, exist_ok=True)
    targets = workdir / "targets.json"
    targets.write_text("[]")
    config = workdir / "prometheus.yml"
    config.write_text(CONFIG.format(interval=SCRAPE_INTERVAL_S, targets=json.dumps(str(targets))))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [path, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
             "--log.level=warn"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, targets, log)
    try:
        def ready() -> bool | None:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}:\n{server.output()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as reply:
                    return True if reply.status == 200 else None
            except (urllib.error.URLError, OSError):
                return None

        wait_until("prometheus ready", ready, deadline_s)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
