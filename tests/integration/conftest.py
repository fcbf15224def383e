"""Fixtures for the integration tests: a real etcd + kube-apiserver + kube-controller-manager.

Fixtures (session-scoped unless noted):

- ``k8s_binaries`` -> ``TestBinaries``: paths of etcd, kube-apiserver, kube-controller-manager,
  kubectl and helm (built by hack/build-test-binaries.sh from pinned modules, cached).
- ``k8s_cluster`` -> ``LocalCluster``: the running control plane with the upstream KServe and Gateway
  API CRDs (and the repo's own crds/*.yaml) installed. ``.kubectl(...)``, ``.helm(...)``,
  ``.kubeconfig``, ``.env``, ``.api_client()``, ``.restart_apiserver()``; see tests/support/apiserver.py.
- ``k8s_env`` -> ``dict[str, str]``: environment with KUBECONFIG and the binaries first on PATH.
- ``k8s_api_client`` -> ``kubernetes.client.ApiClient`` for the admin user.
- ``k8s_namespace`` (function) -> ``str``: a fresh namespace, deleted after the test.
- ``kserve_cluster`` -> ``KServeCluster``: a second control plane of its own (opt-in, so the others stay
  fast) whose kube-controller-manager also runs the deployment and replicaset controllers, with KServe's
  real controller manager and webhooks in Standard (raw) mode beside it; see tests/support/kserve.py.

A cold binary build takes many minutes, so it runs once before the first test (outside the per-test
timeout) when any collected test uses these fixtures. It never skips: a failed build fails the run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:  # tests/ is no package; make `tests.support` importable
    sys.path.insert(0, str(_REPO_ROOT))

from tests.support.apiserver import LocalCluster, TestBinaries, ensure_test_binaries  # noqa: E402
from tests.support.kserve import KServeController  # noqa: E402
from tests.support.upstream_crds import upstream_crd_paths  # noqa: E402

_CLUSTER_FIXTURES = {"k8s_binaries", "k8s_cluster", "k8s_env", "k8s_api_client", "k8s_namespace", "kserve_cluster"}
_HERE = Path(__file__).resolve().parent


def _repo_crds() -> list[Path]:
    """The project's own CRD manifests (crds/*.yaml), installed next to the upstream ones."""
    return sorted((_REPO_ROOT / "crds").glob("*.yaml"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needs_cluster = False
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
        if _CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            needs_cluster = True
    if not needs_cluster or config.option.collectonly:
        return
    # Build (or find cached) binaries now, with the build log on the terminal, not inside a test's
    # timeout. A failure here is an error of the whole run, never a skip.
    capture = config.pluginmanager.getplugin("capturemanager")
    context = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with context:
        ensure_test_binaries(stream_output=True)


@pytest.fixture(scope="session")
def k8s_binaries() -> TestBinaries:
    return ensure_test_binaries()


@pytest.fixture(scope="session")
def k8s_cluster(k8s_binaries: TestBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(k8s_binaries, tmp_path_factory.mktemp("k8s"))
    cluster.start(crds=[*upstream_crd_paths(), *_repo_crds()])
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def k8s_env(k8s_cluster: LocalCluster) -> dict[str, str]:
    return dict(k8s_cluster.env)


@pytest.fixture(scope="session")
def k8s_api_client(k8s_cluster: LocalCluster) -> Iterator[Any]:
    api = k8s_cluster.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def k8s_namespace(k8s_cluster: LocalCluster) -> Iterator[str]:
    name = k8s_cluster.create_namespace()
    yield name
    if k8s_cluster.apiserver.running:
        k8s_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


class KServeCluster:
    """A LocalCluster with KServe's controller manager and webhooks (``.cluster``, ``.kserve``)."""

    def __init__(self, cluster: LocalCluster, kserve: KServeController) -> None:
        self.cluster = cluster
        self.kserve = kserve


@pytest.fixture(scope="session")
def kserve_cluster(k8s_binaries: TestBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KServeCluster]:
    cluster = LocalCluster(k8s_binaries, tmp_path_factory.mktemp("k8s-kserve"),
                           controllers=(*LocalCluster.DEFAULT_CONTROLLERS, "deployment-controller",
                                        "replicaset-controller"))
    cluster.start(crds=[*upstream_crd_paths(), *_repo_crds()])
    kserve = KServeController(cluster)
    try:
        kserve.start()
        yield KServeCluster(cluster, kserve)
    finally:
        kserve.stop()
        cluster.stop()
