"""What a VSSStream renders to: a locked-down worker that restarts for a new source but not for new lines and
zones, its credentials from the Secret without any API access, and its page behind a Service."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from vss_api.vssstream import VSSStream
from vss_operator.render import RenderConfig
from vss_operator.stream_render import CONFIG_FILE, MQTT_CREDENTIAL_ENV, SPEC_HASH, render_stream
from vss_streams.sinks import MQTT_CREDENTIAL_ENV as READ_BY_THE_SINK

STREAM: dict[str, Any] = {
    "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSStream",
    "metadata": {"name": "gate-7", "namespace": "cameras", "uid": "uid-7"},
    "spec": {
        "source": {"url": "rtsp://camera-7:8554/live", "credentials": {"secretName": "camera-7"}},
        "model": {"name": "detector"},
        "analytics": {"lines": [{"name": "road", "from": [0, 0.5], "to": [1, 0.5]}]},
        "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
    },
}
ENDPOINT = "detector-v1-predictor.cameras.svc:8081"


def rendered(change: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    doc = copy.deepcopy(STREAM)
    doc["spec"].update(change or {})
    return {m["kind"]: m for m in render_stream(VSSStream.model_validate(doc), ENDPOINT,
                                                RenderConfig(stream_image="registry.local/stream:1"))}


def test_a_stream_is_a_configmap_a_deployment_a_service_and_the_workers_account_all_owned_by_it() -> None:
    manifests = rendered()

    assert set(manifests) == {"ConfigMap", "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"}
    for m in manifests.values():
        assert m["metadata"]["namespace"] == "cameras"
        assert m["metadata"]["ownerReferences"][0]["uid"] == "uid-7"
    stored = yaml.safe_load(manifests["ConfigMap"]["data"][CONFIG_FILE])
    assert VSSStream.model_validate(stored).spec == VSSStream.model_validate(STREAM).spec


def test_the_worker_runs_vss_stream_on_the_mounted_file_against_the_models_endpoint() -> None:
    deployment = rendered()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]

    assert container["image"] == "registry.local/stream:1"
    assert container["command"] == ["vss", "stream", "/etc/vss/stream.yaml"]
    assert container["args"][:2] == ["--model-grpc", ENDPOINT] and "--watch" in container["args"]
    assert {"name": "stream", "configMap": {"name": "gate-7-worker-config"}} in pod["volumes"]
    assert container["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_worker_is_non_root_read_only_and_its_token_may_only_patch_its_own_status() -> None:
    manifests = rendered()
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    security = pod["containers"][0]["securityContext"]

    assert pod["serviceAccountName"] == "gate-7-worker" and "--report-status" in pod["containers"][0]["args"]
    assert manifests["Role"]["rules"] == [{"apiGroups": ["serving.vss.ai"], "resources": ["vssstreams/status"],
                                           "resourceNames": ["gate-7"], "verbs": ["patch"]}]
    assert manifests["RoleBinding"]["roleRef"]["name"] == "gate-7-worker"
    assert manifests["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "gate-7-worker", "namespace": manifests["Role"]["metadata"]["namespace"]}]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
    assert not security["allowPrivilegeEscalation"]


def test_credentials_come_from_the_named_secret_and_never_appear_in_the_manifests() -> None:
    manifests = rendered()
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in manifests["Deployment"]["spec"]["template"]["spec"][
        "containers"][0]["env"]}

    assert env == {"VSS_SOURCE_USERNAME": {"name": "camera-7", "key": "username"},
                   "VSS_SOURCE_PASSWORD": {"name": "camera-7", "key": "password"}}
    assert rendered({"source": {"url": "file:///clips/a.mp4"}})["Deployment"]["spec"]["template"]["spec"][
        "containers"][0]["env"] == []


def test_the_mqtt_brokers_credentials_come_from_their_secret_as_the_sink_reads_them() -> None:
    sinks = {"mqtt": {"url": "mqtts://broker:8883", "topic": "vss/events",
                      "credentials": {"secretName": "broker", "passwordKey": "token"}}}
    container = rendered({"sinks": sinks})["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}

    assert env["VSS_MQTT_USERNAME"] == {"name": "broker", "key": "username"}
    assert env["VSS_MQTT_PASSWORD"] == {"name": "broker", "key": "token"}
    assert MQTT_CREDENTIAL_ENV == READ_BY_THE_SINK


def test_new_lines_and_zones_keep_the_pod_template_but_a_new_source_changes_it() -> None:
    base = rendered()["Deployment"]["spec"]["template"]
    new_zones = rendered({"analytics": {"zones": [{"name": "kerb", "polygon": [[0, 0], [1, 0], [1, 1]]}]}})
    new_source = rendered({"source": {"url": "rtsp://camera-8:8554/live"}})

    assert new_zones["Deployment"]["spec"]["template"] == base
    assert new_zones["ConfigMap"] != rendered()["ConfigMap"]
    assert new_source["Deployment"]["spec"]["template"]["metadata"]["annotations"][SPEC_HASH] != \
        base["metadata"]["annotations"][SPEC_HASH]


def test_the_service_selects_the_worker_and_publishes_its_http_port() -> None:
    manifests = rendered()
    service, pod = manifests["Service"]["spec"], manifests["Deployment"]["spec"]["template"]

    assert all(pod["metadata"]["labels"][k] == v for k, v in service["selector"].items())
    assert service["ports"] == [{"name": "http", "port": 8090, "targetPort": "http", "protocol": "TCP"}]
