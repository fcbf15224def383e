"""KServe's real controller manager and webhooks beside a ``LocalCluster`` (Standard / raw deployment mode).

``KServeController.start()`` installs what KServe's release manifests install, read from the pinned module
``github.com/kserve/kserve`` (the same version as its CRDs, tests/support/upstream_crds.py):

- the ``kserve`` namespace (labelled ``control-plane``, as the release's namespace is, so KServe's pod
  mutator leaves its own namespace alone) and the ``inferenceservice-config`` ConfigMap from
  ``config/configmap/inferenceservice.yaml``, with ``deploy.defaultDeploymentMode`` set to ``Standard``;
- the default ``ClusterStorageContainer`` from ``config/storagecontainers/default.yaml``;
- every Mutating/ValidatingWebhookConfiguration of ``config/webhook/manifests.yaml``, each
  ``clientConfig.service`` (``$(webhookServiceName)`` in ``$(kserveNamespace)``, filled in by kustomize and
  cert-manager in a release) replaced by a URL on loopback with the ``caBundle`` of a CA made here. There is no
  kube-proxy, so the apiserver could not reach a Service's cluster IP; the path, rules, selectors, failure
  policy and reinvocation policy are the release's, so the apiserver calls the same handlers for the same
  requests.

Then it runs the ``kserve-manager`` binary (hack/testbins/kserve, built by hack/build-test-binaries.sh) with
the admin kubeconfig and waits for its ``/readyz`` (its webhook server is up). The serving certificate is where
controller-runtime looks by default, ``$TMPDIR/k8s-webhook-server/serving-certs/tls.{crt,key}``: upstream's
main.go has no flag for it.
"""

from __future__ import annotations

import copy
import datetime
import http.client
import ipaddress
import json
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.apiserver import LocalCluster, ManagedProcess, free_port, wait_until
from tests.support.upstream_crds import KSERVE_MODULE, KSERVE_VERSION, module_dir

KSERVE_NAMESPACE = "kserve"
WEBHOOK_MANIFESTS = "config/webhook/manifests.yaml"
CONFIGMAP_MANIFEST = "config/configmap/inferenceservice.yaml"
STORAGE_CONTAINER_MANIFEST = "config/storagecontainers/default.yaml"
# The CRDs the release installs beyond the five every test cluster has (tests/support/upstream_crds.py).
EXTRA_CRDS = ("config/crd/full/clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml",)
# The raw deployment mode's name since KServe 0.16 ("RawDeployment" before, still accepted).
STANDARD_MODE = "Standard"


def kserve_file(relative: str) -> Path:
    """A file of the pinned KServe module (fetched through the Go module proxy when missing)."""
    path = module_dir(KSERVE_MODULE, KSERVE_VERSION) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{KSERVE_MODULE}@{KSERVE_VERSION} has no {relative}")
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_webhook_pki(directory: Path) -> bytes:
    """A CA and a 127.0.0.1 serving cert signed by it, as tls.crt/tls.key in DIRECTORY; returns the CA PEM."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("kserve-webhook-test-ca")).issuer_name(_name("kserve-webhook-test-ca"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("kserve-webhook-server")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_cert.public_bytes(serialization.Encoding.PEM)


def webhook_configurations(url: str, ca_pem: bytes) -> list[dict[str, Any]]:
    """KServe's release webhook configurations, each pointed at URL (+ the release's path) trusting CA_PEM."""
    documents = [d for d in yaml.safe_load_all(kserve_file(WEBHOOK_MANIFESTS).read_text()) if d]
    import base64

    bundle = base64.b64encode(ca_pem).decode()
    rendered = []
    for document in documents:
        document = copy.deepcopy(document)
        document["metadata"].pop("creationTimestamp", None)
        for hook in document["webhooks"]:
            service = hook["clientConfig"].pop("service")
            hook["clientConfig"] = {"url": f"{url}{service['path']}", "caBundle": bundle}
        rendered.append(document)
    return rendered


def inferenceservice_config(deployment_mode: str = STANDARD_MODE) -> dict[str, Any]:
    """The release's inferenceservice-config ConfigMap with DEPLOYMENT_MODE as the default mode."""
    configmap: dict[str, Any] = yaml.safe_load(kserve_file(CONFIGMAP_MANIFEST).read_text())
    deploy = json.loads(configmap["data"]["deploy"])
    deploy["defaultDeploymentMode"] = deployment_mode
    configmap["data"]["deploy"] = json.dumps(deploy)
    configmap["metadata"]["namespace"] = KSERVE_NAMESPACE
    return configmap


class KServeController:
    """KServe's controller manager with its webhooks, serving CLUSTER; see the module docstring."""

    def __init__(self, cluster: LocalCluster, *, startup_timeout: float = 90.0) -> None:
        self.cluster = cluster
        self.startup_timeout = startup_timeout
        self.workdir = cluster.workdir / "kserve"
        self.webhook_port = free_port()
        self.probe_port = free_port()
        self.metrics_port = free_port()
        self.ca_pem = write_webhook_pki(self.workdir / "tmp" / "k8s-webhook-server" / "serving-certs")
        env = {**cluster.env, "POD_NAMESPACE": KSERVE_NAMESPACE, "TMPDIR": str(self.workdir / "tmp")}
        self.process = ManagedProcess(
            "kserve-manager",
            [
                str(cluster.binaries.kserve_manager),
                f"--kubeconfig={cluster.kubeconfig}",
                f"--webhook-port={self.webhook_port}",
                f"--health-probe-addr=127.0.0.1:{self.probe_port}",
                f"--metrics-addr=127.0.0.1:{self.metrics_port}",
                "--leader-elect=false",
            ],
            cluster.logs_dir / "kserve-manager.log",
            env=env,
        )

    def manifests(self) -> list[dict[str, Any]]:
        """Everything installed before the manager starts (namespace, config, storage container, webhooks)."""
        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": KSERVE_NAMESPACE, "labels": {"control-plane": "kserve-controller-manager"}}}
        storage: dict[str, Any] = yaml.safe_load(kserve_file(STORAGE_CONTAINER_MANIFEST).read_text())
        hooks = webhook_configurations(f"https://127.0.0.1:{self.webhook_port}", self.ca_pem)
        return [namespace, inferenceservice_config(), storage, *hooks]

    def start(self) -> None:
        self.cluster.install_crds([kserve_file(crd) for crd in EXTRA_CRDS])
        documents = self.manifests()
        # The webhooks go in last: the ClusterStorageContainer is itself validated by none of them.
        self.cluster.kubectl("apply", "--server-side", "-f", "-",
                             input="\n---\n".join(json.dumps(d) for d in documents))
        self.process.start()

        def ready() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", self.probe_port, timeout=2)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status == 200
            finally:
                conn.close()

        wait_until(ready, timeout=self.startup_timeout, what="kserve-manager /readyz",
                   abort=self.process.exit_reason)

    def stop(self) -> None:
        self.process.stop()

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)
