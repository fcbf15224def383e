"""VSSModel → the manifests the operator applies (pure): one KServe InferenceService per served version,
with the transformer collocated in the predictor pod (or, in single-process mode, one container running both:
`vss_api.serving_flags.single_process`), the Gateway API HTTPRoute that splits traffic, and the NetworkPolicy
that keeps callers off the predictor's ports.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from vss_api.serving_flags import (
    CACHE_URL_ENV,
    PREDICTOR_WAIT_S,
    TracingFlags,
    predictor_args,
    single_process,
    single_process_args,
    tracing_flags,
    transformer_args,
)
from vss_api.vssmodel import (
    API_VERSION,
    DNS_LABEL_LIMIT,
    KIND,
    KSERVE_PREDICTOR_SUFFIX,
    Device,
    LabelSelector,
    ModelVersion,
    NetworkPolicyPeer,
    VSSModel,
    VSSModelSpec,
)
from vss_operator.objects import Manifest

ISVC_API_VERSION = "serving.kserve.io/v1beta1"
ISVC_KIND = "InferenceService"
ROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
ROUTE_KIND = "HTTPRoute"
NETWORK_POLICY_API_VERSION = "networking.k8s.io/v1"
NETWORK_POLICY_KIND = "NetworkPolicy"

MANAGED_BY = "vss-operator"
MODEL_LABEL = "serving.vss.ai/model"
VERSION_LABEL = "serving.vss.ai/version"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"

# KServe collocation: `kserve-container` is the predictor, `transformer-container` the pre/post step
# in front of it; KServe routes the pod's traffic to the transformer's first port.
PREDICTOR_CONTAINER = "kserve-container"
TRANSFORMER_CONTAINER = "transformer-container"
PREDICTOR_HTTP_PORT = 8085
PREDICTOR_GRPC_PORT = 8086
TRANSFORMER_HTTP_PORT = 8080
TRANSFORMER_GRPC_PORT = 8081
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts what STORAGE_URI names
KSERVE_SERVICE_PORT = 80  # the port of KServe's `<isvc>-predictor` Service
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS = 1000
# Startup probes: the predictor's warm-up may take the transformer's whole wait for it; the transformer, which
# listens only once load() has its model config, gets that wait and a minute for its own load on top.
STARTUP_PERIOD_S = 5
PREDICTOR_STARTUP_FAILURES = math.ceil(PREDICTOR_WAIT_S / STARTUP_PERIOD_S)
TRANSFORMER_STARTUP_FAILURES = math.ceil((PREDICTOR_WAIT_S + 60) / STARTUP_PERIOD_S)


KSERVE_DEFAULT_DOMAIN_TEMPLATE = "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"


@dataclass(frozen=True)
class RenderConfig:
    """Operator-wide settings for what render writes (flags of `vss operator`, values of the chart)."""

    cpu_image: str = "ghcr.io/vss-serving/predictor-cpu:0.1.0"
    gpu_image: str = "ghcr.io/vss-serving/predictor-gpu:0.1.0"
    stream_image: str = "ghcr.io/vss-serving/stream-worker:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    gateway_name: str = "kserve-ingress-gateway"
    gateway_namespace: str = "kserve"
    domain: str = "example.com"
    # KServe ≥0.16 also accepts Standard/Knative; the legacy names work on every release.
    raw_deployment_mode: str = "RawDeployment"
    serverless_deployment_mode: str = "Serverless"
    transformer_cpu_request: str = "250m"
    transformer_memory_request: str = "256Mi"
    transformer_memory_limit: str = "1Gi"
    # The ServiceAccount KServe's storage initializer reads storage credentials from; None: the default.
    model_service_account: str | None = None
    # The OTLP/HTTP collector of a VSSModel whose spec.tracing names none; None: those are not traced.
    tracing_endpoint: str | None = None
    # KServe's `ingress.domainTemplate` (inferenceservice-config): the host it derives for each component.
    kserve_domain_template: str = KSERVE_DEFAULT_DOMAIN_TEMPLATE
    # The namespaces whose pods may scrape the model pods' metrics ports when spec.networkPolicy.metricsFrom
    # names no one (the chart's Prometheus endpoint is prometheus.monitoring); empty: no one beyond ingressFrom.
    metrics_namespaces: tuple[str, ...] = ("monitoring",)


DEFAULT_CONFIG = RenderConfig()


def isvc_name(model: VSSModel, version: str) -> str:
    return f"{model.metadata.name}-{version}"


def kserve_host_problem(model: VSSModel, config: RenderConfig = DEFAULT_CONFIG) -> str | None:
    """Why KServe could not make a host name for a version of MODEL (None: it can).

    KServe (v0.20, raw mode too) derives `<isvc>-predictor`'s host from its domainTemplate, by default
    `{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}`, and fails the InferenceService ("failed creating host
    name: ... must be no more than 63 characters") when a DNS label of it is longer than 63: with the default
    template, name, version and namespace share one label. The CRD cannot check this (CEL sees no namespace)."""
    namespace = model.metadata.namespace or ""
    for version in model.spec.versions:
        component = f"{isvc_name(model, version.name)}{KSERVE_PREDICTOR_SUFFIX}"
        rendered = (config.kserve_domain_template.replace("{{ .Name }}", component)
                    .replace("{{ .Namespace }}", namespace).replace("{{ .IngressDomain }}", "domain"))
        label = max(rendered.split("."), key=len)
        if len(label) > DNS_LABEL_LIMIT:
            return (f"KServe makes the host of version {version.name} from its domainTemplate "
                    f"{config.kserve_domain_template!r}: the DNS label {label!r} has {len(label)} characters, "
                    f"more than {DNS_LABEL_LIMIT}; shorten metadata.name, the version name or the namespace "
                    f"by {len(label) - DNS_LABEL_LIMIT}")
    return None


def host(model: VSSModel, config: RenderConfig) -> str:
    """The stable host clients call, whatever version serves it."""
    return f"{model.metadata.name}.{model.metadata.namespace}.{config.domain}"


def model_path(storage_uri: str) -> str:
    """Where the model `storage_uri` names is in the pod.

    KServe's storage initializer downloads a remote file (s3://, gs://, https://...) into MODEL_DIR under its
    own name. A `pvc://claim/path` URI is not downloaded: KServe's pod mutator mounts the claim at MODEL_DIR
    with `subPath: path` (storage_initializer_injector.go), so when `path` names a file, MODEL_DIR *is* that
    file, and when it names a directory, MODEL_DIR is the directory."""
    parsed = urlparse(storage_uri)
    if parsed.scheme == "pvc":
        return MODEL_DIR
    base = posixpath.basename(parsed.path)
    return f"{MODEL_DIR}/{base}" if base else MODEL_DIR


def child_selector(model_name: str) -> str:
    """Label selector of every object the operator rendered for the VSSModel `model_name`."""
    return f"{MODEL_LABEL}={model_name},{MANAGED_BY_LABEL}={MANAGED_BY}"


def render(
    model: VSSModel,
    config: RenderConfig = DEFAULT_CONFIG,
    *,
    stable_version: str | None = None,
    canary_version: str | None = None,
    canary_weight: int = 0,
    mirror_percent: int = 0,
) -> list[Manifest]:
    """The manifests serving `model`: `stable_version` (default: spec.version) takes 100 - canary_weight
    percent of the traffic and `canary_version`, when given, the rest; `mirror_percent` of the requests
    are also mirrored to the canary (its answers dropped). A canary at weight 0 keeps its
    InferenceService (initializing, or rolled back and kept for inspection); a version named by neither
    argument has none, so the caller prunes it."""
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary_weight must be within 0..100, not {canary_weight}")
    if not 0 <= mirror_percent <= 100:
        raise ValueError(f"mirror_percent must be within 0..100, not {mirror_percent}")
    if canary_version is not None and canary_version == (stable_version or model.spec.version):
        raise ValueError(f"the canary {canary_version} is also the stable version")
    # A JSON round trip: every manifest is a tree of its own, with no part shared with another.
    return [json.loads(json.dumps(m)) for m in _render(model, config, stable_version, canary_version,
                                                         canary_weight, mirror_percent)]


def _render(model: VSSModel, config: RenderConfig, stable_version: str | None, canary_version: str | None,
            canary_weight: int, mirror_percent: int) -> list[Manifest]:
    versions = {v.name: v for v in model.spec.versions}
    stable = versions[stable_version or model.spec.version]
    canary = versions[canary_version] if canary_version is not None else None
    if model.spec.rollout.traffic_router == "knative":
        # One InferenceService; KServe keeps the previous revision and splits by canaryTrafficPercent.
        serving = canary or stable
        isvc = _inference_service(model, config, serving, model.metadata.name, knative=True)
        if canary is not None:
            isvc["spec"]["predictor"]["canaryTrafficPercent"] = canary_weight
        return [isvc]
    manifests = [_inference_service(model, config, stable, isvc_name(model, stable.name), knative=False)]
    if canary is not None:
        manifests.append(
            _inference_service(model, config, canary, isvc_name(model, canary.name), knative=False))
    backends = [(stable.name, 100 - canary_weight)]
    if canary is not None:
        backends.append((canary.name, canary_weight))
    mirror = (canary.name, mirror_percent) if canary is not None and mirror_percent > 0 else None
    manifests.append(_http_route(model, config, backends, mirror))
    manifests.extend(network_policies(model, config))
    return manifests


def _labels(model: VSSModel, instance: str, component: str, version: str | None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": model.metadata.name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "vss-serving",
        MANAGED_BY_LABEL: MANAGED_BY,
        MODEL_LABEL: model.metadata.name,
    }
    if version is not None:
        labels["app.kubernetes.io/version"] = version
        labels[VERSION_LABEL] = version
    return labels


def _metadata(model: VSSModel, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None,
              ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": model.metadata.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    if model.metadata.uid:
        meta["ownerReferences"] = [{
            "apiVersion": API_VERSION, "kind": KIND, "name": model.metadata.name, "uid": model.metadata.uid,
            "controller": True, "blockOwnerDeletion": True,
        }]
    return meta


def _http_get(path: str, port: int, *, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 2,
            "failureThreshold": failures}


_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
_TMP_MOUNT = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - an emptyDir: the root fs is read-only


def _cache_env(spec: VSSModelSpec) -> list[dict[str, Any]]:
    """The result cache's Redis URL from the Secret the spec names: the kubelet reads it, so neither the
    InferenceService nor the command line holds a password, and the operator needs no access to Secrets."""
    cache = spec.transformer.cache
    if cache is None:
        return []
    ref = cache.secret_ref
    return [{"name": CACHE_URL_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _tracing_env(model: VSSModel, tracing: TracingFlags) -> list[dict[str, Any]]:
    """The pod's OpenTelemetry resource attributes, read by the SDK beside the service name and version each
    process gives itself (`vss_api.tracing`): which pod of which namespace a span comes from."""
    if tracing.endpoint is None:
        return []
    return [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "OTEL_RESOURCE_ATTRIBUTES",
             "value": f"k8s.namespace.name={model.metadata.namespace},k8s.pod.name=$(POD_NAME)"}]


def _inference_service(model: VSSModel, config: RenderConfig, version: ModelVersion, name: str, *,
                       knative: bool) -> Manifest:
    spec = model.spec
    tracing = tracing_flags(spec, config.tracing_endpoint)
    tracing_env = _tracing_env(model, tracing)
    gpu = spec.predictor.device is Device.GPU
    labels = _labels(model, name, "inference", version.name)

    limits = dict(spec.predictor.resources.limits)
    requests = dict(spec.predictor.resources.requests)
    if gpu:
        limits.setdefault(GPU_RESOURCE, "1")
    # KServe's defaulting webhook gives a container without a cpu/memory limit the inferenceservice-config
    # default (cpu 1, memory 2Gi in the release), whatever it requests: a request above that default then
    # makes the Deployment invalid (seen with KServe v0.20's webhook, tests/integration/test_kserve_admission.py).
    # The request is the one limit that is always valid.
    for resource in ("cpu", "memory"):
        if resource in requests:
            limits.setdefault(resource, requests[resource])
    predictor: dict[str, Any] = {
        "name": PREDICTOR_CONTAINER,
        "image": config.gpu_image if gpu else config.cpu_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "vss_predictors"],
        "args": predictor_args(spec, version, model_path(version.storage_uri),
                               PREDICTOR_HTTP_PORT, PREDICTOR_GRPC_PORT, model_name=model.metadata.name,
                               tracing=tracing),
        "env": [{"name": "STORAGE_URI", "value": version.storage_uri}, *tracing_env],
        "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v},
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": _TMP_MOUNT,
    }
    # Clients call the model by the VSSModel's name whichever version answers, so both share it.
    args = transformer_args(spec, model.metadata.name, f"localhost:{PREDICTOR_GRPC_PORT}",
                            f"localhost:{PREDICTOR_HTTP_PORT}", TRANSFORMER_HTTP_PORT, TRANSFORMER_GRPC_PORT,
                            version=version.name, tracing=tracing)
    transformer: dict[str, Any] = {
        "name": TRANSFORMER_CONTAINER,
        "image": config.cpu_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "vss_transformers"],
        "args": args,
        "env": [{"name": "PROTOCOL", "value": "v2"}, *_cache_env(spec), *tracing_env],
        # Knative serves exactly one port per pod; raw mode also publishes gRPC on the Service.
        "ports": [{"name": "http1", "containerPort": TRANSFORMER_HTTP_PORT, "protocol": "TCP"}] + (
            [] if knative else [{"name": "grpc", "containerPort": TRANSFORMER_GRPC_PORT, "protocol": "TCP"}]),
        # Without a startup probe the liveness probe would restart it ~30 s into its wait for the predictor.
        "startupProbe": _http_get("/v2/health/live", TRANSFORMER_HTTP_PORT, period=STARTUP_PERIOD_S,
                                  failures=TRANSFORMER_STARTUP_FAILURES),
        "readinessProbe": _http_get("/v2/health/ready", TRANSFORMER_HTTP_PORT, period=5, failures=3),
        "livenessProbe": _http_get("/v2/health/live", TRANSFORMER_HTTP_PORT, period=10, failures=3),
        "resources": {
            "requests": {"cpu": config.transformer_cpu_request, "memory": config.transformer_memory_request},
            "limits": {"memory": config.transformer_memory_limit},
        },
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": _TMP_MOUNT,
    }
    if not knative:
        # Knative refuses ports and probes on a second container; in raw mode the predictor gets its own,
        # with a startup probe that gives the warm-up (TensorRT engine builds) the transformer's wait for it.
        predictor["ports"] = [
            {"name": "predictor-http", "containerPort": PREDICTOR_HTTP_PORT, "protocol": "TCP"},
            {"name": "predictor-grpc", "containerPort": PREDICTOR_GRPC_PORT, "protocol": "TCP"},
        ]
        predictor["startupProbe"] = _http_get("/v2/health/live", PREDICTOR_HTTP_PORT, period=STARTUP_PERIOD_S,
                                              failures=PREDICTOR_STARTUP_FAILURES)
        predictor["readinessProbe"] = _http_get("/v2/health/ready", PREDICTOR_HTTP_PORT, period=5, failures=3)
        predictor["livenessProbe"] = _http_get("/v2/health/live", PREDICTOR_HTTP_PORT, period=10, failures=3)

    metrics_port = PREDICTOR_HTTP_PORT
    containers = [predictor, transformer]
    if single_process(spec):
        containers = [_single_process_container(model, version, predictor, transformer, tracing)]
        metrics_port = TRANSFORMER_HTTP_PORT
    pod: dict[str, Any] = {
        "minReplicas": spec.predictor.min_replicas,
        "maxReplicas": spec.predictor.max_replicas,
        "labels": labels,
        "annotations": {
            # The predictor's metrics carry the version label the rollout analysis queries.
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(metrics_port),
            "prometheus.io/path": "/metrics",
        },
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if config.model_service_account:
        pod["serviceAccountName"] = config.model_service_account
    if gpu:
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    annotations = {
        DEPLOYMENT_MODE: config.serverless_deployment_mode if knative else config.raw_deployment_mode,
        # "false": with "true" KServe's pod mutator (metrics_aggregate_injector.go) rewrites prometheus.io/port to
        # its queue-proxy's 9091, where nothing listens in raw mode; the pod's own annotations name the port.
        "serving.kserve.io/enable-prometheus-scraping": "false",
    }
    return {
        "apiVersion": ISVC_API_VERSION,
        "kind": ISVC_KIND,
        "metadata": _metadata(model, name, labels, annotations),
        "spec": {"predictor": pod},
    }


def _single_process_container(model: VSSModel, version: ModelVersion, predictor: dict[str, Any],
                              transformer: dict[str, Any], tracing: TracingFlags) -> dict[str, Any]:
    """Single-process mode: one `kserve-container` that serves the transformer's ports and probes and runs the
    model itself, with the predictor's image, resources and model env (the model's cores are the pod's)."""
    return {
        **transformer,
        "name": PREDICTOR_CONTAINER,
        "image": predictor["image"],
        "command": ["python", "-m", "vss_cli.single_process"],
        "args": single_process_args(model.spec, version, model_path(version.storage_uri), TRANSFORMER_HTTP_PORT,
                                    TRANSFORMER_GRPC_PORT, model_name=model.metadata.name, tracing=tracing),
        "env": [{"name": "STORAGE_URI", "value": version.storage_uri}, *transformer["env"]],
        "resources": predictor["resources"],
    }


def _backend_ref(model: VSSModel, version: str) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": f"{isvc_name(model, version)}-predictor",
            "port": KSERVE_SERVICE_PORT}


def _http_route(model: VSSModel, config: RenderConfig, backends: list[tuple[str, int]],
                mirror: tuple[str, int] | None) -> Manifest:
    name = model.metadata.name
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [{**_backend_ref(model, version), "weight": weight} for version, weight in backends],
    }
    if mirror is not None:
        # Gateway API RequestMirror: the gateway sends a copy and drops the answer (shadow stage).
        version, percent = mirror
        rule["filters"] = [{"type": "RequestMirror",
                            "requestMirror": {"backendRef": _backend_ref(model, version), "percent": percent}}]
    if model.spec.rollout.sticky_header:
        # One client (by this header) stays on the version it first got (Gateway API sessionPersistence;
        # in the experimental channel of Gateway API v1.5).
        rule["sessionPersistence"] = {"sessionName": model.spec.rollout.sticky_header, "type": "Header"}
    return {
        "apiVersion": ROUTE_API_VERSION,
        "kind": ROUTE_KIND,
        "metadata": _metadata(model, name, _labels(model, name, "route", None)),
        "spec": {
            "parentRefs": [{
                "group": "gateway.networking.k8s.io", "kind": "Gateway",
                "name": config.gateway_name, "namespace": config.gateway_namespace,
            }],
            "hostnames": [host(model, config)],
            "rules": [rule],
        },
    }


# Labels KServe v0.20 puts on every Pod of an InferenceService's predictor, beside the InferenceService's own
# labels and the predictor's (components/predictor.go, buildObjectMeta): the transformer is collocated there.
KSERVE_ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"
KSERVE_COMPONENT_LABEL = "component"
KSERVE_PREDICTOR_COMPONENT = "predictor"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the apiserver on every namespace


def serving_pod_selector(model: VSSModel) -> dict[str, Any]:
    """The pods that serve `model`, every version of it: KServe's predictor pods carrying the labels render
    gives each of its InferenceServices. A canary's pods are covered from the moment they exist."""
    return {
        "matchLabels": {MODEL_LABEL: model.metadata.name, MANAGED_BY_LABEL: MANAGED_BY,
                        KSERVE_COMPONENT_LABEL: KSERVE_PREDICTOR_COMPONENT},
        "matchExpressions": [{"key": KSERVE_ISVC_POD_LABEL, "operator": "Exists"}],
    }


def _selector(selector: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        out["matchExpressions"] = [
            {"key": e.key, "operator": e.operator, **({"values": list(e.values)} if e.values else {})}
            for e in selector.match_expressions]
    return out


def _peer(peer: NetworkPolicyPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = _selector(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = _selector(peer.pod_selector)
    return out


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def network_policies(model: VSSModel, config: RenderConfig) -> list[Manifest]:
    """The NetworkPolicy of `model`'s serving pods, or none when spec.networkPolicy.enabled is false.

    One per VSSModel, not per version: its rules do not depend on the version, and a policy selecting every
    version's pods needs no apply before a canary's first pod starts. Ingress reaches the transformer's ports
    (what KServe's `<isvc>-predictor` Service targets) from `ingressFrom`, and the metrics ports (the
    predictor's /metrics on its REST port, the transformer's on its own; in single-process mode both components'
    series are on the one /metrics of 8080) from `metricsFrom`; the predictor's ports get no rule of their own:
    the transformer calls them on localhost, which NetworkPolicy does not filter.
    Egress is left alone (storage, Redis, tracing and DNS are the cluster's to restrict)."""
    settings = model.spec.network_policy
    if not settings.enabled:
        return []
    rules: list[dict[str, Any]] = []
    serving: dict[str, Any] = {"ports": _tcp(TRANSFORMER_HTTP_PORT, TRANSFORMER_GRPC_PORT)}
    if settings.ingress_from is not None:
        serving["from"] = [_peer(p) for p in settings.ingress_from]
    rules.append(serving)
    if settings.metrics_from is not None:
        scrapers = [_peer(p) for p in settings.metrics_from]
    elif config.metrics_namespaces:
        scrapers = [{"namespaceSelector": {"matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(config.metrics_namespaces)}]}}]
    else:
        scrapers = []
    if scrapers:
        metrics_ports = (TRANSFORMER_HTTP_PORT,) if single_process(model.spec) else (
            PREDICTOR_HTTP_PORT, TRANSFORMER_HTTP_PORT)
        rules.append({"ports": _tcp(*metrics_ports), "from": scrapers})
    name = model.metadata.name
    return [{
        "apiVersion": NETWORK_POLICY_API_VERSION,
        "kind": NETWORK_POLICY_KIND,
        "metadata": _metadata(model, name, _labels(model, name, "network-policy", None)),
        "spec": {"podSelector": serving_pod_selector(model), "policyTypes": ["Ingress"], "ingress": rules},
    }]
