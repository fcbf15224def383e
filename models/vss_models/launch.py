"""`vss run FILE` as a child process on free loopback ports, for the evaluators that measure the shipped
models through the served path (`vss_models.served`, `vss_models.timeseries`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Endpoint:
    name: str
    http_port: int

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"


@contextmanager
def vss_run(yaml_path: Path, log: Path, deadline_s: float = 300.0) -> Iterator[Endpoint]:
    """`vss run FILE` on a free port until the block ends; waits, with a deadline, for it to serve."""
    name = str(yaml.safe_load(yaml_path.read_text())["metadata"]["name"])
    port = free_port()
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "vss_cli.main", "run", str(yaml_path), "--http-port", str(port),
             "--grpc-port", str(free_port())],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        end = time.monotonic() + deadline_s
        while "is serving" not in log.read_text(errors="replace"):
            if process.poll() is not None:
                raise RuntimeError(f"vss run exited with {process.returncode}:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > end:
                raise TimeoutError(f"vss run not serving after {deadline_s:.0f}s")
            time.sleep(0.1)
        yield Endpoint(name, port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
