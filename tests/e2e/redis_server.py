"""A real `redis-server` process for tests (the Debian package `redis-server`, or the binary named by
$VSS_REDIS_SERVER) on a free loopback port, with no persistence, that a test may SIGKILL and start again on the
same port. A missing binary fails the test: the result cache is tested against Redis or not at all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.e2e.predictor_process import stop
from tests.e2e.prometheus_server import free_port, wait_until


def binary() -> str:
    found = os.environ.get("VSS_REDIS_SERVER") or shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server not found: install the Debian package redis-server (make deps) or set "
                           "$VSS_REDIS_SERVER")
    return found


@dataclass
class RedisServer:
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        self.starts += 1
        with self.log.open("a") as sink:
            self.process = subprocess.Popen(
                [binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--protected-mode", "yes"], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(f"redis-server on {self.port}", self._answers, 20)

    def _answers(self) -> bool | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self.log.read_text()[-2000:]}")
        try:
            return True if self.client().ping() else None
        except redis.RedisError:
            return None

    def kill(self) -> None:
        """SIGKILL, as a node failure would: no shutdown, nothing kept (no persistence)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop([self.process])


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), workdir / "redis-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
