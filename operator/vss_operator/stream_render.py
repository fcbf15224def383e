"""What a VSSStream becomes in the cluster (pure): its worker Deployment, the ConfigMap holding the stream,
and the Service of the worker's page, WebSocket and metrics.

- Lines and zones live only in the ConfigMap, mounted as a file the worker re-reads: editing them changes
  neither the pod template nor the decoder, so counting goes on without a restart. Any other change (source,
  model, sampling, tracking, sinks, resources) changes the template's `spec-hash` and restarts the worker.
- The camera's credentials reach the worker as environment variables from the Secret the spec names
  (`secretKeyRef`): the kubelet reads the Secret, the worker never reads a Secret through the API.
- The worker's ServiceAccount may do one thing: patch the status of its own VSSStream (a Role with that
  resourceName), where it reports the source, fps, lag and conditions. Its token can read nothing.
- One decoder per camera: `Recreate`, never two pods pulling the same stream during an update."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from vss_api.vssmodel import API_VERSION
from vss_api.vssstream import STREAM_KIND, STREAM_PLURAL, VSSStream
from vss_operator.objects import Manifest
from vss_operator.render import (
    _CONTAINER_SECURITY,
    _TMP_MOUNT,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RUN_AS,
    RenderConfig,
)

STREAM_LABEL = "serving.vss.ai/stream"
SPEC_HASH = "serving.vss.ai/spec-hash"
WORKER_CONTAINER = "stream-worker"
WORKER_HTTP_PORT = 8090
CONFIG_DIR = "/etc/vss"
CONFIG_FILE = "stream.yaml"
USERNAME_ENV = "VSS_SOURCE_USERNAME"
PASSWORD_ENV = "VSS_SOURCE_PASSWORD"  # noqa: S105 - the name of a variable, not a password
# The MQTT sink's (vss_streams.sinks reads them; that module may not be imported here: it needs paho)
MQTT_CREDENTIAL_ENV = ("VSS_MQTT_USERNAME", "VSS_MQTT_PASSWORD")


def worker_name(stream: VSSStream) -> str:
    return f"{stream.metadata.name}-worker"


def render_stream(stream: VSSStream, model_endpoint: str, config: RenderConfig) -> list[Manifest]:
    """The worker of `stream`, calling its model's v2 gRPC endpoint `model_endpoint` (host:port)."""
    name = worker_name(stream)
    labels = {
        "app.kubernetes.io/name": stream.metadata.name,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "stream-worker",
        "app.kubernetes.io/part-of": "vss-serving",
        MANAGED_BY_LABEL: MANAGED_BY,
        STREAM_LABEL: stream.metadata.name,
    }
    document = {"apiVersion": API_VERSION, "kind": STREAM_KIND,
                "metadata": {"name": stream.metadata.name, "namespace": stream.metadata.namespace},
                "spec": stream.spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
    manifests: list[Manifest] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(stream, f"{name}-config", labels),
         "data": {CONFIG_FILE: yaml.safe_dump(document, sort_keys=False)}},
        _deployment(stream, name, labels, model_endpoint, config),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(stream, name, labels)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _metadata(stream, name, labels),
         "rules": [{"apiGroups": [API_VERSION.split("/")[0]], "resources": [f"{STREAM_PLURAL}/status"],
                    "resourceNames": [stream.metadata.name], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _metadata(stream, name, labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": stream.metadata.namespace}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(stream, name, labels),
         "spec": {"selector": {STREAM_LABEL: stream.metadata.name, "app.kubernetes.io/component": "stream-worker"},
                  "ports": [{"name": "http", "port": WORKER_HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]}},
    ]
    # A JSON round trip: every manifest a tree of its own (no shared label dicts, no YAML anchors).
    return [json.loads(json.dumps(m)) for m in manifests]


def spec_hash(stream: VSSStream) -> str:
    """What restarts the worker when it changes: the whole spec but its lines and zones."""
    spec = stream.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec.pop("analytics", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _deployment(stream: VSSStream, name: str, labels: dict[str, str], model_endpoint: str,
                config: RenderConfig) -> Manifest:
    spec = stream.spec
    env: list[dict[str, Any]] = []
    for secret, (user_env, password_env) in (
            (spec.source.credentials, (USERNAME_ENV, PASSWORD_ENV)),
            (spec.sinks.mqtt.credentials if spec.sinks.mqtt else None, MQTT_CREDENTIAL_ENV)):
        if secret is not None:
            env += [{"name": variable, "valueFrom": {"secretKeyRef": {"name": secret.secret_name, "key": key}}}
                    for variable, key in ((user_env, secret.username_key), (password_env, secret.password_key))]
    resources = {k: dict(v) for k, v in (("requests", spec.resources.requests), ("limits", spec.resources.limits))
                 if v}
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": config.stream_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["vss", "stream", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "args": ["--model-grpc", model_endpoint, "--http-port", str(WORKER_HTTP_PORT), "--watch",
                 "--report-status"],
        "env": env,
        "ports": [{"name": "http", "containerPort": WORKER_HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10,
                          "timeoutSeconds": 2, "failureThreshold": 3},
        "resources": resources,
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [*_TMP_MOUNT, {"name": "stream", "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(stream, name, labels),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {STREAM_LABEL: stream.metadata.name,
                                         "app.kubernetes.io/component": "stream-worker"}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    SPEC_HASH: spec_hash(stream), "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(WORKER_HTTP_PORT), "prometheus.io/path": "/metrics"}},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,  # for --report-status; the Role above is all it holds
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                        "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                                {"name": "stream", "configMap": {"name": f"{name}-config"}}],
                },
            },
        },
    }


def _metadata(stream: VSSStream, name: str, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": stream.metadata.namespace, "labels": labels}
    if stream.metadata.uid:
        meta["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": STREAM_KIND, "name": stream.metadata.name,
                                    "uid": stream.metadata.uid, "controller": True, "blockOwnerDeletion": True}]
    return meta
