"""Starting `vss run` as a real process for end-to-end tests, and waiting for it with a deadline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    name: str
    http_port: int
    grpc_port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def rest_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def vss_run(yaml_path: Path, name: str, log_dir: Path, deadline_s: float = 240.0,
            args: tuple[str, ...] | None = None) -> Iterator[Served]:
    """`vss run FILE` (or `vss run ARGS...`, e.g. `--model PATH`) on free ports; yields once it printed that it is
    serving, stops it with SIGTERM."""
    http_port, grpc_port = free_port(), free_port()
    log = log_dir / f"vss-run-{name}-{http_port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "vss_cli.main", "run", *(args or (str(yaml_path),)),
             "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
            stdout=sink, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    served = Served(name, http_port, grpc_port, process, log)
    try:
        end = time.monotonic() + deadline_s
        while "is serving" not in served.output():
            if process.poll() is not None:
                raise RuntimeError(f"vss run exited with {process.returncode}:\n{served.output()[-4000:]}")
            if time.monotonic() > end:
                raise TimeoutError(f"vss run not serving after {deadline_s}s:\n{served.output()[-4000:]}")
            time.sleep(0.2)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
