"""A predictor and a transformer as two real processes that a test kills, stops and restarts on the same ports,
as a kubelet restarts a container: started with the flags `vss run` and the operator give them
(`vss_api.serving_flags`), each with its own log and its resident memory read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.prometheus_server import free_port, wait_until
from vss_api.serving_flags import predictor_args, transformer_args
from vss_api.vssmodel import VSSModelSpec

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Supervised:
    """One serving process on fixed ports; `start` again after it died starts a new one in its place."""

    role: str
    module: str
    args: list[str]
    model_name: str
    http_port: int
    grpc_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def rest_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def running(self) -> subprocess.Popen[bytes]:
        assert self.process is not None, f"{self.role} was never started"
        return self.process

    def start(self, deadline_s: float = 180.0) -> None:
        """Start it and return once it answers ready."""
        self.starts += 1
        log = self.workdir / f"{self.role}-{self.http_port}-{self.starts}.log"
        self.logs.append(log)
        with log.open("w") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args], stdout=sink, stderr=subprocess.STDOUT, cwd=REPO,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_until(f"{self.role} ready", self._ready, deadline_s)

    def _ready(self) -> bool | None:
        if self.running.poll() is not None:
            raise RuntimeError(f"{self.role} exited with {self.running.returncode}:\n{self.output()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{self.rest_url}/v2/models/{self.model_name}/ready",
                                        timeout=2) as reply:
                return True if reply.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None

    def signal(self, signum: signal.Signals) -> None:
        self.running.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, and wait until the kernel has reaped it (its sockets are closed then)."""
        self.signal(signal.SIGKILL)
        self.running.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; a stopped (SIGSTOP) process is continued first."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def output(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs)

    def rss_kb(self) -> int:
        """Resident memory now (VmRSS), in kB."""
        for line in Path(f"/proc/{self.running.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.role} (pid {self.running.pid})")


@dataclass
class SupervisedPair:
    name: str
    predictor: Supervised
    transformer: Supervised

    def stop(self) -> None:
        self.transformer.stop()
        self.predictor.stop()


def supervised_pair(spec: VSSModelSpec, name: str, model_path: Path, workdir: Path) -> SupervisedPair:
    """Predictor and transformer on free ports, both started and ready; `stop()` ends them."""
    version = spec.served_version()
    p_http, p_grpc, t_http, t_grpc = free_port(), free_port(), free_port(), free_port()
    predictor = Supervised("predictor", "vss_predictors",
                           predictor_args(spec, version, str(model_path), p_http, p_grpc, model_name=name),
                           name, p_http, p_grpc, workdir)
    transformer = Supervised("transformer", "vss_transformers",
                             transformer_args(spec, name, predictor.grpc_url, predictor.rest_url, t_http, t_grpc),
                             name, t_http, t_grpc, workdir)
    pair = SupervisedPair(name, predictor, transformer)
    try:
        predictor.start()
        transformer.start()
    except BaseException:
        pair.stop()
        raise
    return pair


def unread_bytes_on(server_port: int) -> list[int]:
    """For each established loopback connection to `server_port`, the bytes the server has not read yet
    (the receive queue in /proc/net/tcp): all zeros once the server has read every request sent to it."""
    queues = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == server_port and fields[3] == "01":  # 01: ESTABLISHED
                queues.append(int(fields[4].split(":")[1], 16))
    return queues
