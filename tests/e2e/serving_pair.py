"""A predictor and a transformer as two real processes, started with the flags `vss run` and the operator give
them (`vss_api.serving_flags`), each with its own log, for tests that watch each process: its exit code, its
log lines, its ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.prometheus_server import free_port, wait_until
from vss_api.serving_flags import predictor_args, transformer_args
from vss_api.vssmodel import VSSModelSpec

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Process:
    """One serving process: its ports, its log, and a way to read the log's JSON lines."""

    role: str
    http_port: int
    grpc_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def rest_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines (`vss_api.server.configure_json_logging`); other lines are skipped."""
        found = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found


@dataclass
class Pair:
    name: str
    predictor: Process
    transformer: Process


def _ready(process: Process, name: str) -> bool | None:
    if process.process.poll() is not None:
        raise RuntimeError(f"{process.role} exited with {process.process.returncode}:\n{process.output()[-3000:]}")
    try:
        with urllib.request.urlopen(f"http://{process.rest_url}/v2/models/{name}/ready", timeout=2) as reply:
            return True if reply.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def _start(role: str, module: str, args: list[str], http_port: int, grpc_port: int, workdir: Path,
           env: Mapping[str, str] | None = None) -> Process:
    log = workdir / f"{role}-{http_port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=sink, stderr=subprocess.STDOUT,
                                   cwd=REPO, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    return Process(role, http_port, grpc_port, process, log)


@contextmanager
def serving_pair(spec: VSSModelSpec, name: str, model_path: Path, workdir: Path, *,
                 predictor_log_level: str = "INFO", deadline_s: float = 180.0,
                 env: Mapping[str, str] | None = None) -> Iterator[Pair]:
    """Predictor, then transformer in front of it (each with `env` added to this process's environment); yields
    once both answer ready. Whatever still runs at the end gets SIGTERM, then SIGKILL after 20 s."""
    version = spec.served_version()
    p_http, p_grpc, t_http, t_grpc = free_port(), free_port(), free_port(), free_port()
    started: list[Process] = []
    try:
        predictor = _start("predictor", "vss_predictors",
                           [*predictor_args(spec, version, str(model_path), p_http, p_grpc, model_name=name),
                            "--log_level", predictor_log_level], p_http, p_grpc, workdir, env)
        started.append(predictor)
        wait_until(f"predictor of {name} ready", lambda: _ready(predictor, name), deadline_s)
        transformer = _start("transformer", "vss_transformers",
                             transformer_args(spec, name, predictor.grpc_url, predictor.rest_url, t_http, t_grpc),
                             t_http, t_grpc, workdir, env)
        started.append(transformer)
        wait_until(f"transformer of {name} ready", lambda: _ready(transformer, name), deadline_s)
        yield Pair(name, predictor, transformer)
    finally:
        for process in reversed(started):
            if process.process.poll() is None:
                process.process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.process.kill()
                process.process.wait()


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` any more: binding it succeeds."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
