"""The Helm chart: lints, renders into objects the real apiserver accepts, and its RBAC is exactly
what the operator needs: the operator runs under the chart's ServiceAccount, and nothing more is allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorFactory,
    operator_factory_fixture,
)
from tests.support.apiserver import LocalCluster, wait_until
from tests.support.upstream_crds import prometheus_operator_crd_paths
from vss_api.vssmodel import VSSModel
from vss_api.vssstream import VSSStream
from vss_cli import main as cli_main
from vss_operator.render import RenderConfig, render
from vss_operator.stream_render import render_stream

CHART = Path(__file__).resolve().parents[2] / "charts" / "vss-serving"
DASHBOARD = CHART / "files" / "dashboards" / "vss-serving.json"
RULES = CHART / "files" / "alerts" / "vss-serving.rules.yaml"
OBSERVABILITY = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
                 "--set", "grafana.dashboards.enabled=true", "--set", "prometheusRule.enabled=true"]
MODEL = """
apiVersion: serving.vss.ai/v1alpha1
kind: VSSModel
metadata:
  name: yolo
spec:
  task: detection
  version: v1
  versions:
    - {name: v1, storageUri: "s3://models/yolo/v1/model.onnx"}
"""


def _template(cluster: LocalCluster, namespace: str, *values: str, release: str = "vss") -> list[dict[str, Any]]:
    out = cluster.helm("template", release, str(CHART), "-n", namespace, *values).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("values", [[], ["--set", "watchNamespace=vision"],
                                    ["--set", "leaderElection.enabled=false", "--set", "replicaCount=1"],
                                    ["--set", "metrics.serviceMonitor.enabled=true"], OBSERVABILITY],
                         ids=["default", "namespaced", "no-leader-election", "servicemonitor", "observability"])
def test_helm_lint_passes(k8s_cluster: LocalCluster, values: list[str]) -> None:
    result = k8s_cluster.helm("lint", "--strict", str(CHART), *values, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_refuses_unknown_keys(k8s_cluster: LocalCluster) -> None:
    result = k8s_cluster.helm("template", "vss", str(CHART), "--set", "replicas=3", check=False)

    assert result.returncode != 0
    assert "additional properties 'replicas' not allowed" in result.stderr


def test_every_value_is_documented_in_values_yaml() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key in schema["properties"]:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        above = lines[max(0, index - 3):index]
        assert any(line.lstrip().startswith("#") for line in above) or any(
            line.lstrip().startswith("# --") for line in lines[index + 1:index + 3]), f"{key} undocumented"


@pytest.mark.parametrize("values", [[], ["--set", "watchNamespace=NAMESPACE"]], ids=["clusterwide", "namespaced"])
def test_rendered_chart_is_accepted_by_the_apiserver(
    k8s_cluster: LocalCluster, k8s_namespace: str, values: list[str],
) -> None:
    values = [v.replace("NAMESPACE", k8s_namespace) for v in values]
    docs = _template(k8s_cluster, k8s_namespace, *values, release=k8s_namespace)

    result = k8s_cluster.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts",
                                 "-n", k8s_namespace, "-f", "-", input=yaml.safe_dump_all(docs), check=False)

    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "CustomResourceDefinition", "Service"} <= kinds
    assert ("Role" in kinds) and ("ClusterRole" in kinds)


def test_deployment_is_non_root_with_a_read_only_root_fs_resources_and_probes(
    k8s_cluster: LocalCluster,
) -> None:
    deployment = next(d for d in _template(k8s_cluster, "ops") if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--leader-election" in container["args"]


def test_the_prometheus_endpoints_come_from_the_values_and_reach_the_operator_flags(
    k8s_cluster: LocalCluster,
) -> None:
    def args(*values: str) -> list[str]:
        deployment = next(d for d in _template(k8s_cluster, "ops", *values) if d["kind"] == "Deployment")
        return [a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                if a.startswith("--prometheus")]

    assert args() == ["--prometheus=default=http://prometheus.monitoring:9090"]
    assert args("--set", "prometheus.endpoints.central=https://thanos.obs:9090") == [
        "--prometheus=central=https://thanos.obs:9090", "--prometheus=default=http://prometheus.monitoring:9090"]
    refused = k8s_cluster.helm("template", "vss", str(CHART), "--set", "prometheus.endpoints.x=file:///etc/passwd",
                               check=False)
    assert refused.returncode != 0


def test_the_metrics_namespaces_come_from_the_values_and_reach_the_rendered_network_policy(
    k8s_cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Values → the operator's flag → what `vss render` (the operator's render, with its flags) makes of it."""
    model = tmp_path / "yolo.yaml"
    model.write_text(MODEL)

    def scrapers(*values: str) -> list[dict[str, Any]] | None:
        deployment = next(d for d in _template(k8s_cluster, "ops", *values) if d["kind"] == "Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        flags = [a for a in args if a.startswith("--metrics-namespaces")]
        assert len(flags) == 1, args
        capsys.readouterr()
        assert cli_main.main(["render", str(model), *flags]) == 0
        (policy,) = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "NetworkPolicy"]
        rules = policy["spec"]["ingress"]
        return rules[1]["from"] if len(rules) > 1 else None

    def namespaces(*values: str) -> list[str] | None:
        found = scrapers(*values)
        return None if found is None else found[0]["namespaceSelector"]["matchExpressions"][0]["values"]

    assert namespaces() == ["monitoring"]
    assert namespaces("--set", "serving.metricsNamespaces={prometheus,observability}") == [
        "prometheus", "observability"]
    assert scrapers("--set-json", "serving.metricsNamespaces=[]") is None
    refused = k8s_cluster.helm("template", "vss", str(CHART), "--set", "serving.metricsNamespaces={Not_A_Label}",
                               check=False)
    assert refused.returncode != 0


def test_crds_can_be_left_out_or_kept_on_uninstall(k8s_cluster: LocalCluster) -> None:
    def crd(*values: str) -> dict[str, Any] | None:
        return next((d for d in _template(k8s_cluster, "ops", *values)
                     if d["kind"] == "CustomResourceDefinition"), None)

    assert crd("--set", "crds.enabled=false") is None
    kept = crd()
    assert kept is not None
    assert kept["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    dropped = crd("--set", "crds.keep=false")
    assert dropped is not None
    assert "annotations" not in dropped["metadata"]
    assert kept["spec"]["names"]["shortNames"] == ["vssm"]


def test_servicemonitor_scrapes_the_operator_metrics_port(k8s_cluster: LocalCluster) -> None:
    docs = _template(k8s_cluster, "ops", "--set", "metrics.serviceMonitor.enabled=true")

    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    service = next(d for d in docs if d["kind"] == "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "http-metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_servicemonitor_keeps_the_namespace_label_the_operator_series_carry(k8s_cluster: LocalCluster) -> None:
    """vss_model_* name the VSSModel's namespace; without honorLabels Prometheus would rename it exported_namespace
    and put the operator's own namespace in its place."""
    docs = _template(k8s_cluster, "ops", "--set", "metrics.serviceMonitor.enabled=true")

    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def _dashboards(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "ConfigMap" and "vss-serving.json" in (d.get("data") or {})]


def test_the_dashboard_configmap_is_off_by_default_and_labelled_for_grafanas_sidecar(
    k8s_cluster: LocalCluster,
) -> None:
    assert _dashboards(_template(k8s_cluster, "ops")) == []
    (default,) = _dashboards(_template(k8s_cluster, "ops", "--set", "grafana.dashboards.enabled=true"))
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"  # kube-prometheus-stack's default
    assert default["metadata"]["namespace"] == "ops"
    assert default["data"]["vss-serving.json"] == DASHBOARD.read_text().rstrip("\n")
    assert json.loads(default["data"]["vss-serving.json"])["uid"] == "vss-serving"

    (custom,) = _dashboards(_template(
        k8s_cluster, "ops", "--set", "grafana.dashboards.enabled=true", "--set", "grafana.dashboards.label=dashboards",
        "--set-string", "grafana.dashboards.labelValue=vss", "--set", "grafana.dashboards.namespace=monitoring",
        "--set", "grafana.dashboards.annotations.grafana_folder=VSS"))
    assert custom["metadata"]["labels"]["dashboards"] == "vss"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["namespace"] == "monitoring"
    assert custom["metadata"]["annotations"] == {"grafana_folder": "VSS"}


def test_the_prometheusrule_is_off_by_default_and_carries_the_rules_file_unchanged(k8s_cluster: LocalCluster) -> None:
    assert [d for d in _template(k8s_cluster, "ops") if d["kind"] == "PrometheusRule"] == []
    docs = _template(k8s_cluster, "ops", "--set", "prometheusRule.enabled=true",
                     "--set", "prometheusRule.labels.release=kube-prometheus-stack")

    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())  # what `promtool test rules` tested
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_observability_objects_are_accepted_by_the_apiserver_with_the_prometheus_operators_crds(
    k8s_cluster: LocalCluster, k8s_namespace: str,
) -> None:
    """The ServiceMonitor, the PodMonitor, the PrometheusRule (against the Prometheus Operator's own CRDs, their
    schemas) and the dashboard's ConfigMap, server-side dry run."""
    k8s_cluster.install_crds(prometheus_operator_crd_paths())
    docs = [d for d in _template(k8s_cluster, k8s_namespace, *OBSERVABILITY, release=k8s_namespace)
            if d["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "PodMonitor", "PrometheusRule", "ServiceMonitor"]

    result = k8s_cluster.kubectl("apply", "--dry-run=server", "--server-side", "-n", k8s_namespace, "-f", "-",
                                 input=yaml.safe_dump_all(docs), check=False)

    assert result.returncode == 0, result.stderr


def test_the_podmonitor_scrapes_the_ports_the_operator_gives_model_pods_and_stream_workers(
    k8s_cluster: LocalCluster,
) -> None:
    """Its port names are those of the model pods the operator renders, in both layouts (two processes: the
    predictor's and the transformer's; one process: the one container's), and of the stream worker; each
    layout's metrics port (its prometheus.io/port) is among them, and its selector matches the pods' labels."""
    pods = []
    for processes in ("two", "single"):
        doc = yaml.safe_load(MODEL) | {"metadata": {"name": "yolo", "namespace": "vision"}}
        doc["spec"]["predictor"] = {"processes": processes}
        isvc = next(m for m in render(VSSModel.model_validate(doc)) if m["kind"] == "InferenceService")
        pods.append(isvc["spec"]["predictor"])
    stream = VSSStream.model_validate({
        "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSStream",
        "metadata": {"name": "gate", "namespace": "vision", "uid": "u"},
        "spec": {"source": {"url": "rtsp://camera:8554/live"}, "model": {"name": "yolo"}}})
    worker = next(m for m in render_stream(stream, "yolo:8081", RenderConfig()) if m["kind"] == "Deployment")
    worker_pod = worker["spec"]["template"]
    containers = [*(c for pod in pods for c in pod["containers"]), *worker_pod["spec"]["containers"]]
    ports = {p["name"] for c in containers for p in c.get("ports", [])}

    for values, namespaces in (([], {"any": True}), (["--set", "watchNamespace=vision"], {"matchNames": ["vision"]})):
        docs = _template(k8s_cluster, "ops", "--set", "metrics.podMonitor.enabled=true", *values)
        (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
        assert monitor["spec"]["namespaceSelector"] == namespaces
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["predictor-http", "http1", "http"]
    scraped = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert scraped <= ports
    for pod in pods:
        metrics_port = int(pod["annotations"]["prometheus.io/port"])
        assert {p["name"] for c in pod["containers"] for p in c.get("ports", [])
                if p["containerPort"] == metrics_port} & scraped, pod["containers"]
    for labels in (*(pod["labels"] for pod in pods), worker_pod["metadata"]["labels"]):
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _install_rbac(cluster: LocalCluster, namespace: str) -> str:
    """The chart's ServiceAccount and RBAC, for real; returns a kubeconfig holding the SA's token."""
    docs = [d for d in _template(cluster, namespace, "--set", "crds.enabled=false", release=namespace)
            if d["kind"] in {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    return next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")


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


def test_operator_does_all_its_work_under_the_charts_service_account(
    k8s_cluster: LocalCluster, k8s_namespace: str, operator_factory: OperatorFactory, tmp_path: Path,
) -> None:
    account = _install_rbac(k8s_cluster, k8s_namespace)
    kubeconfig = _token_kubeconfig(k8s_cluster, k8s_namespace, account, tmp_path / "sa.kubeconfig")
    operator = operator_factory(kubeconfig=kubeconfig)
    operator.wait_leading()  # the Lease: create/get/update

    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=MODEL)
    wait_until(lambda: k8s_cluster.kubectl("get", "httproute", "yolo", "-n", k8s_namespace,
                                           check=False).returncode == 0, timeout=60, what="the HTTPRoute")
    k8s_cluster.kubectl("patch", "inferenceservice", "yolo-v1", "-n", k8s_namespace, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": {"conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}))
    waited = k8s_cluster.kubectl("wait", "--for=condition=Ready", "vssm/yolo", "-n", k8s_namespace,
                                 "--timeout=60s", check=False)
    assert waited.returncode == 0, waited.stderr + operator.log()[-3000:]
    # A rollout (Immediate: promoted once the new version is ready) deletes the old version under the same
    # identity, and posts its Events.
    k8s_cluster.kubectl("patch", "vssm", "yolo", "-n", k8s_namespace, "--type=json", "-p", json.dumps([
        {"op": "add", "path": "/spec/versions/-", "value": {"name": "v2", "storageUri": "s3://m/v2.onnx"}},
        {"op": "add", "path": "/spec/rollout", "value": {"strategy": "Immediate"}},
        {"op": "replace", "path": "/spec/version", "value": "v2"}]))
    wait_until(lambda: k8s_cluster.kubectl("get", "inferenceservice", "yolo-v2", "-n", k8s_namespace,
                                           check=False).returncode == 0, timeout=60, what="yolo-v2")
    k8s_cluster.kubectl("patch", "inferenceservice", "yolo-v2", "-n", k8s_namespace, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": {"conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}))
    wait_until(lambda: k8s_cluster.kubectl("get", "inferenceservice", "yolo-v1", "-n", k8s_namespace,
                                           check=False).returncode != 0, timeout=60, what="yolo-v1 deleted")
    events = json.loads(k8s_cluster.kubectl("get", "events", "-n", k8s_namespace, "-o", "json").stdout)["items"]
    assert {"InferenceServicesReady", "RolloutStarted", "Promoted"} <= {e["reason"] for e in events}
    assert "Forbidden" not in operator.log() and "forbidden" not in operator.log()


ALLOWED = [
    ("get", "vssmodels.serving.vss.ai"), ("list", "vssmodels.serving.vss.ai"), ("watch", "vssmodels.serving.vss.ai"),
    ("patch", "vssmodels.serving.vss.ai"), ("patch", "vssmodels.serving.vss.ai#status"),
    ("create", "inferenceservices.serving.kserve.io"), ("patch", "inferenceservices.serving.kserve.io"),
    ("list", "inferenceservices.serving.kserve.io"), ("watch", "inferenceservices.serving.kserve.io"),
    ("delete", "inferenceservices.serving.kserve.io"),
    ("create", "httproutes.gateway.networking.k8s.io"), ("patch", "httproutes.gateway.networking.k8s.io"),
    ("list", "httproutes.gateway.networking.k8s.io"), ("delete", "httproutes.gateway.networking.k8s.io"),
    ("create", "networkpolicies.networking.k8s.io"), ("patch", "networkpolicies.networking.k8s.io"),
    ("list", "networkpolicies.networking.k8s.io"), ("delete", "networkpolicies.networking.k8s.io"),
    ("create", "events"), ("create", "leases.coordination.k8s.io"),
    ("get", "leases.coordination.k8s.io/vss-operator"), ("update", "leases.coordination.k8s.io/vss-operator"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "vssstreams.serving.vss.ai"), ("list", "vssstreams.serving.vss.ai"), ("watch", "vssstreams.serving.vss.ai"),
    ("patch", "vssstreams.serving.vss.ai"), ("patch", "vssstreams.serving.vss.ai#status"),
    ("create", "deployments.apps"), ("patch", "deployments.apps"), ("create", "services"), ("patch", "services"),
    ("create", "configmaps"), ("patch", "configmaps"),
    ("create", "serviceaccounts"), ("patch", "serviceaccounts"),
    ("create", "roles.rbac.authorization.k8s.io"), ("patch", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"), ("patch", "rolebindings.rbac.authorization.k8s.io"),
]
FORBIDDEN = [
    ("get", "secrets"), ("list", "secrets"), ("list", "pods"), ("delete", "deployments.apps"),
    ("update", "deployments.apps"), ("patch", "deployments.apps#scale"), ("delete", "configmaps"),
    ("delete", "vssmodels.serving.vss.ai"), ("create", "vssmodels.serving.vss.ai"),
    ("update", "inferenceservices.serving.kserve.io"), ("patch", "inferenceservices.serving.kserve.io#status"),
    ("update", "vssmodels.serving.vss.ai#status"),
    ("get", "leases.coordination.k8s.io/someone-elses-lease"), ("delete", "leases.coordination.k8s.io/vss-operator"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"), ("delete", "events"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"), ("delete", "vssstreams.serving.vss.ai"),
    ("escalate", "roles.rbac.authorization.k8s.io"), ("bind", "roles.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts#token"), ("delete", "roles.rbac.authorization.k8s.io"),
    ("update", "networkpolicies.networking.k8s.io"), ("watch", "networkpolicies.networking.k8s.io"),
    ("deletecollection", "networkpolicies.networking.k8s.io"),
]


def test_charts_service_account_may_do_exactly_what_the_operator_does(
    k8s_cluster: LocalCluster, k8s_namespace: str,
) -> None:
    account = _install_rbac(k8s_cluster, k8s_namespace)
    subject = f"--as=system:serviceaccount:{k8s_namespace}:{account}"

    def can(verb: str, resource: str) -> bool:
        """RESOURCE is `plural.group[/name][#subresource]`."""
        resource, _, subresource = resource.partition("#")
        extra = [f"--subresource={subresource}"] if subresource else []
        result = k8s_cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", k8s_namespace, subject,
                                     check=False)
        return result.stdout.strip() == "yes"

    assert [(v, r) for v, r in ALLOWED if not can(v, r)] == []
    assert [(v, r) for v, r in FORBIDDEN if can(v, r)] == []
