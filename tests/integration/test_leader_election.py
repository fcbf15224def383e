"""Two operator replicas on one namespace: only the Lease holder reconciles; the standby takes over."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorFactory,
    operator_factory_fixture,
)
from tests.support.apiserver import LocalCluster, wait_until

MODEL = """
apiVersion: serving.vss.ai/v1alpha1
kind: VSSModel
metadata:
  name: {name}
spec:
  task: detection
  version: v1
  versions:
    - {{name: v1, storageUri: "s3://models/{name}/v1/model.onnx"}}
"""


def _isvc_exists(cluster: LocalCluster, name: str, namespace: str) -> bool:
    return cluster.kubectl("get", "inferenceservice", name, "-n", namespace, check=False).returncode == 0


def _holder(cluster: LocalCluster, namespace: str) -> str:
    lease = json.loads(cluster.kubectl("get", "lease", "vss-operator", "-n", namespace, "-o", "json").stdout)
    return str(lease["spec"].get("holderIdentity") or "")


def test_only_the_lease_holder_reconciles_and_a_standby_takes_over_when_it_dies(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator_factory: OperatorFactory,
) -> None:
    first = operator_factory()
    first.wait_leading()
    second = operator_factory()
    assert second.health() == {"ok": True, "leader": False, "kopf": False}  # alive, standing by

    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=MODEL.format(name="alpha"))
    wait_until(lambda: _isvc_exists(k8s_cluster, "alpha-v1", k8s_namespace), timeout=60, what="alpha-v1")
    wait_until(lambda: first.reconciled("alpha") >= 1, timeout=30, what="the leader's reconcile log")
    assert second.reconciled("alpha") == 0
    assert not second.is_leading()

    first.stop(signal.SIGKILL)  # no clean release: the standby waits for the Lease to expire
    second.wait_leading(timeout=30)

    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=MODEL.format(name="beta"))
    wait_until(lambda: _isvc_exists(k8s_cluster, "beta-v1", k8s_namespace), timeout=60, what="beta-v1")
    wait_until(lambda: second.reconciled("beta") >= 1, timeout=30, what="the new leader's reconcile log")
    assert first.reconciled("beta") == 0


def test_a_replica_stopped_cleanly_hands_the_lease_over_at_once(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator_factory: OperatorFactory,
) -> None:
    first = operator_factory("--lease-duration", "60", "--lease-renew-deadline", "40")
    first.wait_leading()
    second = operator_factory("--lease-duration", "60", "--lease-renew-deadline", "40")
    holder = _holder(k8s_cluster, k8s_namespace)

    assert first.stop() == 0  # SIGTERM: kopf stops, the Lease is released

    # Far sooner than the 60 s lease duration.
    second.wait_leading(timeout=20)
    assert _holder(k8s_cluster, k8s_namespace) not in ("", holder)


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return int(reply.status), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def _token_kubeconfig(cluster: LocalCluster, namespace: str, account: str, path: Path) -> Path:
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server,
                                                   "certificate-authority": str(cluster.pki.ca.cert)}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": account, "namespace": namespace}}],
    }))
    return path


def test_a_replica_forbidden_to_use_the_lease_says_so_loudly_and_is_not_ready(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator_factory: OperatorFactory, tmp_path: Path,
) -> None:
    """A ServiceAccount with no RBAC at all: every Lease call is a 403 from the real apiserver's authorizer."""
    k8s_cluster.kubectl("create", "serviceaccount", "no-leases", "-n", k8s_namespace)
    kubeconfig = _token_kubeconfig(k8s_cluster, k8s_namespace, "no-leases", tmp_path / "no-leases.kubeconfig")
    replica = operator_factory(kubeconfig=kubeconfig)

    _, answer = wait_until(lambda: (r := _readyz(replica.port))[0] == 503 and r, timeout=30,
                                what="/readyz 503 with the lease error")
    assert "forbidden" in str(answer["lease_error"]).lower(), answer
    health = replica.health()
    assert health is not None and health["ok"] and not health["leader"]  # alive: liveness does not restart it
    with urllib.request.urlopen(f"http://127.0.0.1:{replica.port}/metrics", timeout=2) as reply:
        assert "vss_operator_lease_error 1.0" in reply.read().decode()
    log = wait_until(lambda: "is forbidden to this replica" in (text := replica.log()) and text, timeout=30,
                     what="the ERROR log line")
    line = next(line for line in log.splitlines() if "is forbidden to this replica" in line)
    assert "ERROR" in line, line
