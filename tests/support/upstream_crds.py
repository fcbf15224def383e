"""Paths of the real upstream CRDs, read from their pinned Go modules in the module cache.

None of these files is committed: ``go mod download -json MODULE@VERSION`` fetches the module through
the Go module proxy once (verified against the checksum database) and reports the directory it was
unpacked into. The versions are pinned here and nowhere else.

Run ``python tests/support/upstream_crds.py`` to print the paths.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

KSERVE_MODULE = "github.com/kserve/kserve"
# The newest KServe tag the Go module proxy serves here: v0.21.0 (the Python SDK's version) is refused
# with 403, so the CRDs come from v0.20.0.
KSERVE_VERSION = "v0.20.0"
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
GATEWAY_API_VERSION = "v1.5.1"
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"

# config/crd/full is what KServe's kustomize overlay ships (its only patch targets v1beta1 CRDs, a no-op).
KSERVE_CRDS = (
    "serving.kserve.io_inferenceservices.yaml",
    "serving.kserve.io_servingruntimes.yaml",
    "serving.kserve.io_clusterservingruntimes.yaml",
    "serving.kserve.io_inferencegraphs.yaml",
    "serving.kserve.io_trainedmodels.yaml",
)
GATEWAY_API_CRDS = (
    "gateway.networking.k8s.io_gatewayclasses.yaml",
    "gateway.networking.k8s.io_gateways.yaml",
    "gateway.networking.k8s.io_httproutes.yaml",
    "gateway.networking.k8s.io_grpcroutes.yaml",
    "gateway.networking.k8s.io_referencegrants.yaml",
)

# What the chart renders for the Prometheus Operator (ServiceMonitor, PodMonitor, PrometheusRule); installed by
# the chart's tests only, not with every cluster.
PROMETHEUS_OPERATOR_CRDS = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)


class UpstreamCRDError(RuntimeError):
    """A pinned module could not be fetched or does not hold the expected CRD files."""


def go_binary() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise UpstreamCRDError("'go' is not on PATH: it is needed to fetch the pinned upstream CRD modules")
    return found


@functools.cache
def module_dir(module: str, version: str) -> Path:
    """Directory of MODULE@VERSION in the Go module cache, downloading it through GOPROXY if needed."""
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    # Outside any go.mod, so no enclosing module's requirements or replace lines interfere.
    with tempfile.TemporaryDirectory(prefix="vss-go-mod-") as cwd:
        proc = subprocess.run(
            [go_binary(), "mod", "download", "-json", f"{module}@{version}"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        info = {}
    if proc.returncode != 0 or "Dir" not in info or info.get("Error"):
        raise UpstreamCRDError(
            f"go mod download {module}@{version} failed (rc={proc.returncode}): "
            f"{info.get('Error') or proc.stderr.strip() or proc.stdout.strip()}"
        )
    return Path(info["Dir"])


def _existing(base: Path, names: tuple[str, ...]) -> list[Path]:
    paths = [base / name for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UpstreamCRDError(f"expected upstream CRD files are missing: {missing}")
    return paths


def kserve_crd_paths() -> list[Path]:
    """KServe's serving.kserve.io CRDs (InferenceService first)."""
    return _existing(module_dir(KSERVE_MODULE, KSERVE_VERSION) / "config" / "crd" / "full", KSERVE_CRDS)


def gateway_api_crd_paths() -> list[Path]:
    """Gateway API standard-channel CRDs: GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant."""
    base = module_dir(GATEWAY_API_MODULE, GATEWAY_API_VERSION) / "config" / "crd" / "standard"
    return _existing(base, GATEWAY_API_CRDS)


def prometheus_operator_crd_paths() -> list[Path]:
    """The Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs, as its example/ ships them."""
    base = module_dir(PROMETHEUS_OPERATOR_MODULE, PROMETHEUS_OPERATOR_VERSION) / "example" / "prometheus-operator-crd"
    return _existing(base, PROMETHEUS_OPERATOR_CRDS)


def upstream_crd_paths() -> list[Path]:
    """Every upstream CRD the integration cluster installs."""
    return [*kserve_crd_paths(), *gateway_api_crd_paths()]


if __name__ == "__main__":
    for path in upstream_crd_paths():
        print(path)
