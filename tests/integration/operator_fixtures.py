"""The operator as a real process (`python -m vss_cli.main operator`) against the local control plane.

Test modules import `operator_fixture` / `operator_factory_fixture`; tests ask for `operator` /
`operator_factory`. Each operator watches one test namespace (so tests cannot see each other's objects) and holds its
leader Lease there, with short lease timings so fail-over tests finish in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.apiserver import LocalCluster, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class OperatorProcess:
    cluster: LocalCluster
    namespace: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    kubeconfig: Path | None = None  # default: the cluster's admin kubeconfig
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        argv = [
            sys.executable, "-m", "vss_cli.main", "operator",
            "--kubeconfig", str(self.kubeconfig or self.cluster.kubeconfig), "--namespace", self.namespace,
            "--health-port", str(self.port), "--lease-namespace", self.namespace,
            "--lease-duration", "4", "--lease-renew-deadline", "3", "--lease-retry-period", "0.5",
            "--retry-delay", "1", "--verbose", *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env={**self.cluster.env},
            start_new_session=True)
        log.close()
        wait_until(self.health, timeout=30, what=f"operator /healthz on {self.port}", abort=self.exit_reason)
        return self

    def exit_reason(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"operator exited {self.proc.returncode}:\n{self.log()[-4000:]}"

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except OSError:
            return None

    def is_leading(self) -> bool:
        health = self.health()
        return bool(health and health["leader"] and health["kopf"])

    def wait_leading(self, timeout: float = 30) -> None:
        wait_until(self.is_leading, timeout=timeout, what="the operator to lead", abort=self.exit_reason)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def reconciled(self, name: str) -> int:
        """How many reconciles of the VSSModel NAME this process logged."""
        # The handler logs "reconciled generation N: <name>-<version>, <name>".
        return sum(1 for line in self.log().splitlines()
                   if "reconciled generation" in line and f": {name}-" in line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture(name="operator_factory")
def operator_factory_fixture(
    k8s_cluster: LocalCluster, k8s_namespace: str, tmp_path: Path,
) -> Iterator[OperatorFactory]:
    """Start operators watching the test namespace; all are stopped after the test (logs shown on failure)."""
    started: list[OperatorProcess] = []

    def start(*extra_args: str, kubeconfig: Path | None = None) -> OperatorProcess:
        op = OperatorProcess(k8s_cluster, k8s_namespace, tmp_path / f"operator-{len(started)}.log",
                             list(extra_args), kubeconfig)
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()
        # Captured output: pytest shows it only when the test failed.
        print(f"--- {op.log_path.name} ---\n{op.log()[-6000:]}")


@pytest.fixture(name="operator")
def operator_fixture(operator_factory: OperatorFactory) -> OperatorProcess:
    """One operator, leading, for the test namespace."""
    op = operator_factory()
    op.wait_leading()
    return op

