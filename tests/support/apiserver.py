"""A real, local Kubernetes control plane for the integration tests (envtest-style, no kubelet).

``LocalCluster`` runs etcd, kube-apiserver and kube-controller-manager (garbage collector and namespace
controllers unless ``controllers=`` names more) and, with ``scheduler=True``, kube-scheduler on loopback, with a
throwaway PKI, and talks to it through the real ``kubectl``, ``helm`` and the Python ``kubernetes`` client.
The binaries come from ``hack/build-test-binaries.sh``, which builds them once from pinned Go modules into a
cache outside the repo.

Typical use (see tests/integration/conftest.py for the pytest fixtures)::

    binaries = ensure_test_binaries()
    cluster = LocalCluster(binaries, workdir)
    cluster.start(crds=upstream_crd_paths())
    cluster.kubectl("get", "inferenceservices", "-A")
    cluster.restart_apiserver()   # etcd and the controller manager keep running
    cluster.stop()
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-test-binaries.sh"
# Set to a directory holding the six binaries to skip the build script (e.g. a CI cache restore).
BIN_DIR_ENV = "VSS_K8S_BIN_DIR"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The local control plane could not be built, started or reached."""


class CommandError(RuntimeError):
    """A kubectl/helm command failed; the message carries its stdout and stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"{' '.join(args)} exited {returncode}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")


# --------------------------------------------------------------------------------------------------
# Binaries


@dataclass(frozen=True)
class TestBinaries:
    """Absolute paths of the control-plane binaries built by hack/build-test-binaries.sh."""

    __test__ = False  # not a pytest test class

    bin_dir: Path

    @property
    def etcd(self) -> Path:
        return self.bin_dir / "etcd"

    @property
    def kube_apiserver(self) -> Path:
        return self.bin_dir / "kube-apiserver"

    @property
    def kube_controller_manager(self) -> Path:
        return self.bin_dir / "kube-controller-manager"

    @property
    def kube_scheduler(self) -> Path:
        return self.bin_dir / "kube-scheduler"

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def kserve_manager(self) -> Path:
        """KServe's controller manager with its webhooks (github.com/kserve/kserve cmd/manager)."""
        return self.bin_dir / "kserve-manager"

    def all(self) -> list[Path]:
        return [self.etcd, self.kube_apiserver, self.kube_controller_manager, self.kube_scheduler, self.kubectl,
                self.helm,
                self.kserve_manager]

    def missing(self) -> list[Path]:
        return [p for p in self.all() if not os.access(p, os.X_OK)]


def ensure_test_binaries(*, build: bool = True, stream_output: bool = False) -> TestBinaries:
    """Return the test binaries, building them with hack/build-test-binaries.sh when needed.

    The script exits at once when its cache already holds them. With ``$VSS_K8S_BIN_DIR`` set, that
    directory is used as is. Raises ``ClusterError`` with the build log when anything is missing:
    the integration tests fail loudly, they never skip.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        binaries = TestBinaries(Path(override).resolve())
        if binaries.missing():
            raise ClusterError(f"${BIN_DIR_ENV}={override} lacks {[str(p) for p in binaries.missing()]}")
        return binaries
    if not build:
        key = _run_build_script("--print-key", stream_output=False)
        cache = Path(os.environ.get("VSS_CACHE", Path.home() / ".cache" / "vss"))
        binaries = TestBinaries(cache / "k8s-bins" / key / "bin")
        if binaries.missing():
            raise ClusterError(
                f"test binaries missing in {binaries.bin_dir}: run {BUILD_SCRIPT.relative_to(REPO_ROOT)}"
            )
        return binaries
    binaries = TestBinaries(Path(_run_build_script(stream_output=stream_output)))
    if binaries.missing():
        raise ClusterError(f"{BUILD_SCRIPT} succeeded but {binaries.missing()} are missing")
    return binaries


def _run_build_script(*args: str, stream_output: bool) -> str:
    """Run the build script; return the last stdout line (the bin dir, or the key)."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=None if stream_output else subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ClusterError(
            f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} {' '.join(args)} failed (rc={proc.returncode}); "
            f"the integration tests need its binaries.\n{proc.stderr or '(build output above)'}"
        )
    return lines[-1]


# --------------------------------------------------------------------------------------------------
# PKI


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Files of the throwaway PKI: a CA, the apiserver serving cert, client certs, the SA key."""

    ca: CertPair
    serving: CertPair
    admin: CertPair
    controller_manager: CertPair
    service_account_key: Path
    service_account_pub: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        not_before = now - datetime.timedelta(minutes=5)
        not_after = now + datetime.timedelta(days=2)

        def write(name: str, data: bytes) -> Path:
            path = directory / name
            path.write_bytes(data)
            path.chmod(0o600)
            return path

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("vss-test-ca")
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )

        def issue(
            filename: str,
            common_name: str,
            *,
            organizations: Iterable[str] = (),
            server_names: Iterable[str] = (),
            server_ips: Iterable[str] = (),
            server: bool = False,
        ) -> CertPair:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(_name(common_name, organizations))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    critical=False,
                )
            )
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            if sans:
                builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            return CertPair(write(f"{filename}.crt", _pem_cert(cert)), write(f"{filename}.key", _pem_key(key)))

        sa_key = ec.generate_private_key(ec.SECP256R1())
        return cls(
            ca=CertPair(write("ca.crt", _pem_cert(ca_cert)), write("ca.key", _pem_key(ca_key))),
            serving=issue(
                "apiserver",
                "kube-apiserver",
                server_names=[
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ],
                server_ips=["127.0.0.1", KUBERNETES_SERVICE_IP],
                server=True,
            ),
            # O=system:masters is bound to cluster-admin by RBAC's bootstrap policy.
            admin=issue("admin", "vss-test-admin", organizations=["system:masters"]),
            # The controllers run on the manager's own identity (no per-controller service accounts);
            # the garbage collector must be able to delete any kind, so it is a master too.
            controller_manager=issue(
                "kube-controller-manager", "system:kube-controller-manager", organizations=["system:masters"]
            ),
            service_account_key=write("sa.key", _pem_key(sa_key)),
            service_account_pub=write(
                "sa.pub",
                sa_key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            ),
        )


def write_kubeconfig(path: Path, server: str, ca: Path, client: CertPair, user: str) -> Path:
    """A self-contained kubeconfig (certificates embedded) for SERVER with the CLIENT cert."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    # JSON is valid YAML, so no YAML writer is needed.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "vss-test", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(client.cert), "client-key-data": b64(client.key)},
            }
        ],
        "contexts": [{"name": "vss-test", "context": {"cluster": "vss-test", "user": user, "namespace": "default"}}],
        "current-context": "vss-test",
        "preferences": {},
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Poll CONDITION until it returns something other than None/False; raise after TIMEOUT seconds.

    ABORT, when given, is checked each round and ends the wait at once with its message (e.g. the
    process being waited on has exited).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if abort is not None and (reason := abort()) is not None:
            raise ClusterError(f"gave up waiting for {what}: {reason}")
        try:
            result = condition()
            if result is not None and result is not False:
                return result
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass
class ManagedProcess:
    """A child process in its own process group, logging to a file."""

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        if self.running:
            raise ClusterError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                start_new_session=True,  # own process group: stop() signals the whole group
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_reason(self) -> str | None:
        """None while running; otherwise why it ended, with the tail of its log."""
        if self.popen is None:
            return f"{self.name} was never started"
        rc = self.popen.poll()
        if rc is None:
            return None
        return f"{self.name} exited with {rc}; last log lines:\n{self.log_tail()}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after TIMEOUT seconds; always reaps the child."""
        proc = self.popen
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        # Leftover members of the group (none expected) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.popen = None


def _https_get(port: int, path: str, *, context: ssl.SSLContext, timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------
# The cluster


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager on loopback, rooted at WORKDIR.

    After ``start()``:

    - ``kubeconfig``: path of an admin (system:masters) kubeconfig; ``server``: the https URL.
    - ``env``: environment for subprocesses (KUBECONFIG, PATH with the binaries first, isolated
      kubectl/helm caches); ``kubectl(...)`` / ``helm(...)`` run the real CLIs with it.
    - ``api_client()``: a ``kubernetes.client.ApiClient`` for the same cluster.
    - ``stop_apiserver()`` / ``start_apiserver()`` / ``restart_apiserver()``: take the apiserver
      down and back on the same port and certificates while etcd (the data) and the controller
      manager keep running.
    - ``stop()``: kills everything (process groups), idempotent.
    """

    # What kube-controller-manager runs unless told otherwise: the tests need only garbage collection.
    DEFAULT_CONTROLLERS = ("garbage-collector-controller", "namespace-controller")
    # What Pods that really run need besides (tests/support/node_agent.py): Deployments make ReplicaSets make
    # Pods, and Services get the Ready Pods' addresses.
    WORKLOAD_CONTROLLERS = ("deployment-controller", "replicaset-controller", "endpoints-controller",
                            "endpointslice-controller")

    def __init__(self, binaries: TestBinaries, workdir: Path, *, startup_timeout: float = 90.0,
                 controllers: Sequence[str] = DEFAULT_CONTROLLERS, scheduler: bool = False) -> None:
        """SCHEDULER: also run kube-scheduler (for a Node of tests/support/node_agent.py)."""
        self.binaries = binaries
        self.workdir = workdir.resolve()
        self.startup_timeout = startup_timeout
        self.controllers = tuple(controllers)
        self.logs_dir = self.workdir / "logs"
        self.pki = Pki.create(self.workdir / "pki")
        self.etcd_port = free_port()
        self.apiserver_port = free_port()
        self.controller_manager_port = free_port()
        self.scheduler_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self.kubeconfig = write_kubeconfig(
            self.workdir / "kubeconfig", self.server, self.pki.ca.cert, self.pki.admin, "vss-test-admin"
        )
        self._controller_manager_kubeconfig = write_kubeconfig(
            self.workdir / "kube-controller-manager.kubeconfig",
            self.server,
            self.pki.ca.cert,
            self.pki.controller_manager,
            "system:kube-controller-manager",
        )
        for sub in ("kube-cache", "helm/cache", "helm/config", "helm/data"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.env: dict[str, str] = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{binaries.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECACHEDIR": str(self.workdir / "kube-cache"),
            "KUBERC": "off",  # ignore a developer's ~/.kube/kuberc
            "HELM_CACHE_HOME": str(self.workdir / "helm/cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm/config"),
            "HELM_DATA_HOME": str(self.workdir / "helm/data"),
        }
        self._client_tls = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        self._client_tls.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        self.etcd = ManagedProcess("etcd", self._etcd_argv(), self.logs_dir / "etcd.log")
        self.apiserver = ManagedProcess("kube-apiserver", self._apiserver_argv(), self.logs_dir / "kube-apiserver.log")
        self.controller_manager = ManagedProcess(
            "kube-controller-manager",
            self._controller_manager_argv(),
            self.logs_dir / "kube-controller-manager.log",
        )
        # The scheduler runs as the admin (system:masters): its own RBAC is not what these tests are about.
        self.scheduler: ManagedProcess | None = (
            ManagedProcess("kube-scheduler", self._scheduler_argv(), self.logs_dir / "kube-scheduler.log")
            if scheduler else None
        )

    # -- command lines ----------------------------------------------------------------------------

    def _etcd_argv(self) -> list[str]:
        url = f"http://127.0.0.1:{self.etcd_port}"
        return [
            str(self.binaries.etcd),
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            "--listen-peer-urls=http://127.0.0.1:0",  # single member: no peer port to collide on
            "--unsafe-no-fsync=true",  # throwaway data; fsync only slows the tests down
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        pki = self.pki
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # No service-account controller runs, so namespaces have no "default" ServiceAccount.
            "--disable-admission-plugins=ServiceAccount",
            # The built-in endpoint reconciler would publish 127.0.0.1 for the kubernetes Service,
            # which Endpoints validation rejects; nothing here routes to it anyway.
            "--endpoint-reconciler-type=none",
            # Close open watches when told to stop: otherwise a SIGTERM waits out --request-timeout
            # (60 s) for the controller manager's watches before the server exits.
            "--shutdown-watch-termination-grace-period=5s",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_argv(self) -> list[str]:
        kubeconfig = self._controller_manager_kubeconfig
        return [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--controllers={','.join(self.controllers)}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.controller_manager_port}",
            f"--cert-dir={self.workdir / 'controller-manager-certs'}",
            "--v=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            str(self.binaries.kube_scheduler),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.scheduler_port}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
            "--v=1",
        ]

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, crds: Sequence[Path] = ()) -> None:
        """Start etcd and the apiserver, install CRDS, then start the controller manager.

        The CRDs go in before the controller manager starts so the garbage collector knows their
        kinds from its first discovery (it rediscovers only every 30 s).
        """
        try:
            self._start_etcd()
            self.start_apiserver()
            if crds:
                self.install_crds(crds)
            self._start_controller_manager()
            if self.scheduler is not None:
                self.scheduler.start()
                self._wait_healthz(self.scheduler, self.scheduler_port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every component (controller manager, apiserver, etcd); safe to call twice."""
        for proc in (self.scheduler, self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop()

    def _start_etcd(self) -> None:
        self.etcd.start()

        def healthy() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=2)
            try:
                conn.request("GET", "/health")
                resp = conn.getresponse()
                return resp.status == 200 and '"health":"true"' in resp.read().decode()
            finally:
                conn.close()

        wait_until(healthy, timeout=self.startup_timeout, what="etcd /health", abort=self.etcd.exit_reason)

    def start_apiserver(self) -> None:
        """Start kube-apiserver and wait for /readyz (all its post-start hooks done)."""
        if not self.etcd.running:
            raise ClusterError("etcd is not running")
        self.apiserver.start()
        self.wait_for_apiserver()

    def wait_for_apiserver(self, timeout: float | None = None) -> None:
        def ready() -> bool:
            status, _ = _https_get(self.apiserver_port, "/readyz", context=self._client_tls)
            return status == 200

        wait_until(
            ready,
            timeout=timeout or self.startup_timeout,
            what="kube-apiserver /readyz",
            abort=self.apiserver.exit_reason,
        )

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver; etcd and the controller manager keep running."""
        self.apiserver.stop()

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def _start_controller_manager(self) -> None:
        self.controller_manager.start()
        self._wait_healthz(self.controller_manager, self.controller_manager_port)

    def _wait_healthz(self, proc: ManagedProcess, port: int) -> None:
        insecure = ssl.create_default_context()
        # The manager and the scheduler serve /healthz with a self-signed cert they generate themselves;
        # this loopback probe only checks liveness, the cluster's own traffic is verified against our CA.
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def healthy() -> bool:
            status, _ = _https_get(port, "/healthz", context=insecure)
            return status == 200

        wait_until(healthy, timeout=self.startup_timeout, what=f"{proc.name} /healthz", abort=proc.exit_reason)

    def logs(self) -> dict[str, str]:
        """Tail of each component's log, for failure messages."""
        procs = (self.etcd, self.apiserver, self.controller_manager, self.scheduler)
        return {p.name: p.log_tail() for p in procs if p is not None}

    # -- clients ----------------------------------------------------------------------------------

    def _run(
        self, binary: Path, args: Sequence[str], *, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(binary), *args]
        proc = subprocess.run(
            argv, input=input, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster; raises CommandError on failure if CHECK."""
        return self._run(self.binaries.kubectl, args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned helm against this cluster; raises CommandError on failure if CHECK."""
        return self._run(self.binaries.helm, args, input=input, check=check, timeout=timeout)

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for the admin user (caller closes it)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)

    def install_crds(self, paths: Sequence[Path], timeout: float = 60.0) -> list[str]:
        """Server-side apply CRD files and wait until every CRD is Established; return their names.

        Server-side apply because KServe's InferenceService CRD (~2 MB) is far over the 256 KiB
        last-applied annotation that client-side apply would write.
        """
        args = ["apply", "--server-side", "--force-conflicts", "-o", "name"]
        for path in paths:
            args += ["-f", str(path)]
        names = self.kubectl(*args).stdout.split()
        crds = [n for n in names if n.startswith("customresourcedefinition")]
        # Polled rather than `kubectl wait`, which fails ("conditions accessor error") when it reads a CRD
        # before the apiserver has written any status to it.
        query = '{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\\n"}{end}'
        wanted = {n.split("/", 1)[1] for n in crds}

        def established() -> bool:
            out = self.kubectl("get", "customresourcedefinitions", "-o", f"jsonpath={query}").stdout
            done = {line.split("=")[0] for line in out.splitlines() if line.endswith("=True")}
            return wanted <= done

        if crds:
            wait_until(established, timeout=timeout, interval=0.2, what=f"CRDs {sorted(wanted)} Established")
        return crds

    def create_namespace(self, prefix: str = "vss-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        return name
