"""One predictor process of one model version, started with the flags `vss run` gives it
(`serving_args.predictor_args`), for tests that need real metrics from real versions: its v2 REST
endpoint, its /metrics, and a deadline on its readiness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.e2e.prometheus_server import free_port, wait_until
from vss_api.serving_flags import predictor_args
from vss_api.vssmodel import VSSModelSpec

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Predictor:
    name: str
    version: str
    http_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def infer(self, side: int) -> int:
        """One v2 REST request with a `side`x`side` frame; the HTTP status."""
        pixels = np.full((1, side, side, 3), 40, np.uint8)
        pixels[0, : side // 2, : side // 2, 0] = 250
        body = json.dumps({"inputs": [{"name": "images", "shape": list(pixels.shape), "datatype": "UINT8",
                                       "data": pixels.ravel().tolist()}]}).encode()
        request = urllib.request.Request(
            f"http://{self.instance}/v2/models/{self.name}/infer", data=body,
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.instance}/metrics", timeout=10) as reply:
            return str(reply.read().decode())


def start_predictor(spec: VSSModelSpec, name: str, version: str, workdir: Path,
                    deadline_s: float = 180.0) -> Predictor:
    """Start `version` of `spec` as model `name`; returns once it answers ready."""
    entry = next(v for v in spec.versions if v.name == version)
    http_port, grpc_port = free_port(), free_port()
    log = workdir / f"predictor-{version}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "vss_predictors",
             *predictor_args(spec, entry, entry.storage_uri, http_port, grpc_port, model_name=name)],
            stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    predictor = Predictor(name, version, http_port, process, log)

    def ready() -> bool | None:
        if process.poll() is not None:
            raise RuntimeError(f"predictor {version} exited with {process.returncode}:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(
                    f"http://{predictor.instance}/v2/models/{name}/ready", timeout=2) as reply:
                return True if reply.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None

    wait_until(f"predictor {version} ready", ready, deadline_s)
    return predictor


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM all, then wait; kill what does not stop."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
