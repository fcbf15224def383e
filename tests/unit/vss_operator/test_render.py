"""render: a VSSModel becomes InferenceServices (predictor + collocated transformer, or one container running
both in single-process mode) and an HTTPRoute."""

from __future__ import annotations

from typing import Any

import pytest

from vss_api.serving_flags import predictor_args, single_process_args, transformer_args
from vss_api.vssmodel import VSSModel
from vss_operator.render import RenderConfig, child_selector, kserve_host_problem, model_path, render

UID = "0c6f1c9e-2f5b-4f7e-9d55-0a4b3f0e8e11"


def _model(**spec: Any) -> VSSModel:
    body: dict[str, Any] = {
        "apiVersion": "serving.vss.ai/v1alpha1",
        "kind": "VSSModel",
        "metadata": {"name": "yolo", "namespace": "vision", "uid": UID, "generation": 3},
        "spec": {
            "task": "detection",
            "version": "v2",
            "versions": [
                {"name": "v1", "storageUri": "s3://models/yolo/v1/model.onnx"},
                {"name": "v2", "storageUri": "s3://models/yolo/v2/best.onnx"},
            ],
            **spec,
        },
    }
    return VSSModel.model_validate(body)


def _two_process(**spec: Any) -> VSSModel:
    """A model rendered as two containers (a CPU model renders one by default): the tests of the hop's layout."""
    return _model(**{**spec, "predictor": {"processes": "two", **spec.get("predictor", {})}})


def _route(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (route,) = [m for m in manifests if m["kind"] == "HTTPRoute"]
    return route


def _containers(isvc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in isvc["spec"]["predictor"]["containers"]}


def test_a_two_process_cpu_detection_model_renders_the_expected_inferenceservice_and_route() -> None:
    model = _two_process()
    config = RenderConfig(cpu_image="reg/cpu:1", gpu_image="reg/gpu:1", domain="example.com")

    isvc, route, _policy = render(model, config)

    labels = {
        "app.kubernetes.io/name": "yolo",
        "app.kubernetes.io/instance": "yolo-v2",
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "vss-serving",
        "app.kubernetes.io/managed-by": "vss-operator",
        "serving.vss.ai/model": "yolo",
        "app.kubernetes.io/version": "v2",
        "serving.vss.ai/version": "v2",
    }
    owner = {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel", "name": "yolo", "uid": UID,
             "controller": True, "blockOwnerDeletion": True}
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]}}
    tmp = [{"name": "tmp", "mountPath": "/tmp"}]
    version = model.spec.versions[1]

    def probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 2,
                "failureThreshold": failures}

    assert isvc == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "yolo-v2",
            "namespace": "vision",
            "labels": labels,
            "annotations": {
                "serving.kserve.io/deploymentMode": "RawDeployment",
                "serving.kserve.io/enable-prometheus-scraping": "false",
            },
            "ownerReferences": [owner],
        },
        "spec": {"predictor": {
            "minReplicas": 1,
            "maxReplicas": 1,
            "labels": labels,
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8085",
                            "prometheus.io/path": "/metrics"},
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "reg/cpu:1",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", "vss_predictors"],
                    "args": predictor_args(model.spec, version, "/mnt/models/best.onnx", 8085, 8086,
                                           model_name="yolo"),
                    "env": [{"name": "STORAGE_URI", "value": "s3://models/yolo/v2/best.onnx"}],
                    "resources": {},
                    "securityContext": security,
                    "volumeMounts": tmp,
                    "ports": [
                        {"name": "predictor-http", "containerPort": 8085, "protocol": "TCP"},
                        {"name": "predictor-grpc", "containerPort": 8086, "protocol": "TCP"},
                    ],
                    "startupProbe": probe("/v2/health/live", 8085, 5, 60),
                    "readinessProbe": probe("/v2/health/ready", 8085, 5, 3),
                    "livenessProbe": probe("/v2/health/live", 8085, 10, 3),
                },
                {
                    "name": "transformer-container",
                    "image": "reg/cpu:1",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", "vss_transformers"],
                    "args": transformer_args(model.spec, "yolo", "localhost:8086", "localhost:8085",
                                             8080, 8081, version="v2"),
                    "env": [{"name": "PROTOCOL", "value": "v2"}],
                    "ports": [
                        {"name": "http1", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
                    ],
                    "startupProbe": probe("/v2/health/live", 8080, 5, 72),
                    "readinessProbe": probe("/v2/health/ready", 8080, 5, 3),
                    "livenessProbe": probe("/v2/health/live", 8080, 10, 3),
                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                  "limits": {"memory": "1Gi"}},
                    "securityContext": security,
                    "volumeMounts": tmp,
                },
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        }},
    }
    assert route == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "yolo",
            "namespace": "vision",
            "labels": {
                "app.kubernetes.io/name": "yolo",
                "app.kubernetes.io/instance": "yolo",
                "app.kubernetes.io/component": "route",
                "app.kubernetes.io/part-of": "vss-serving",
                "app.kubernetes.io/managed-by": "vss-operator",
                "serving.vss.ai/model": "yolo",
            },
            "ownerReferences": [owner],
        },
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "name": "kserve-ingress-gateway", "namespace": "kserve"}],
            "hostnames": ["yolo.vision.example.com"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": "yolo-v2-predictor", "port": 80,
                                 "weight": 100}],
            }],
        },
    }


def test_transformer_talks_to_the_predictor_on_localhost_with_its_health_check() -> None:
    transformer = _containers(render(_two_process())[0])["transformer-container"]

    args = transformer["args"]
    assert args[args.index("--predictor_host") + 1] == "localhost:8086"
    assert args[args.index("--predictor_rest_host") + 1] == "localhost:8085"
    assert "--enable_predictor_health_check" in args
    assert args[args.index("--http_port") + 1] == "8080"
    assert args[args.index("--grpc_port") + 1] == "8081"


def test_the_result_cache_url_reaches_the_transformer_from_its_secret_and_never_in_the_manifest() -> None:
    cache = {"secretRef": {"name": "redis-auth", "key": "redis-url"}, "ttlSeconds": 120,
             "maxEntryBytes": 65536, "timeoutMs": 20}
    manifests = render(_two_process(transformer={"cache": cache}), stable_version="v1", canary_version="v2",
                       canary_weight=10)
    services = [m for m in manifests if m["kind"] == "InferenceService"]
    assert len(services) == 2 and "redis" not in str(manifests).replace("redis-auth", "").replace("redis-url", "")
    for isvc in services:  # the stable and the canary version alike
        containers = _containers(isvc)
        transformer, predictor = containers["transformer-container"], containers["kserve-container"]
        assert {"name": "VSS_CACHE_URL", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "redis-url"}}
                } in transformer["env"]
        args = transformer["args"]
        assert "--cache" in args
        assert (args[args.index("--cache_ttl_seconds") + 1], args[args.index("--cache_max_entry_bytes") + 1],
                args[args.index("--cache_timeout_ms") + 1]) == ("120", "65536", "20")
        assert all(e["name"] != "VSS_CACHE_URL" for e in predictor["env"])  # the predictor never talks to Redis


def test_without_a_cache_block_the_transformer_gets_no_cache_flags_or_secret() -> None:
    transformer = _containers(render(_two_process())[0])["transformer-container"]
    assert not any(a.startswith("--cache") for a in transformer["args"])
    assert all("valueFrom" not in e for e in transformer["env"])


def test_gpu_device_asks_for_one_gpu_and_uses_the_gpu_image_for_the_predictor_only() -> None:
    model = _model(predictor={"device": "gpu", "resources": {"limits": {"memory": "4Gi"}}})
    config = RenderConfig(cpu_image="reg/cpu:1", gpu_image="reg/gpu:1")

    isvc = render(model, config)[0]

    containers = _containers(isvc)
    assert containers["kserve-container"]["image"] == "reg/gpu:1"
    assert containers["kserve-container"]["resources"]["limits"] == {"memory": "4Gi", "nvidia.com/gpu": "1"}
    assert containers["transformer-container"]["image"] == "reg/cpu:1"
    assert "nvidia.com/gpu" not in str(containers["transformer-container"]["resources"])
    assert isvc["spec"]["predictor"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_cpu_device_asks_for_no_gpu() -> None:
    assert "nvidia.com/gpu" not in str(render(_model())[0])


def test_canary_gets_its_own_inferenceservice_and_the_route_splits_by_weight() -> None:
    manifests = render(_model(), stable_version="v1", canary_version="v2", canary_weight=10)

    assert [(m["kind"], m["metadata"]["name"]) for m in manifests] == [
        ("InferenceService", "yolo-v1"), ("InferenceService", "yolo-v2"), ("HTTPRoute", "yolo"),
        ("NetworkPolicy", "yolo")]
    backends = _route(manifests)["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in backends] == [
        ("yolo-v1-predictor", 90), ("yolo-v2-predictor", 10)]
    stable_args = _containers(manifests[0])["kserve-container"]["args"]
    assert stable_args[stable_args.index("--model_version") + 1] == "v1"
    assert _containers(manifests[0])["kserve-container"]["env"][0]["value"] == "s3://models/yolo/v1/model.onnx"


def test_a_rolled_back_canary_stays_routed_at_zero() -> None:
    route = _route(render(_model(), stable_version="v1", canary_version="v2", canary_weight=0))

    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]


def test_the_shadow_stage_mirrors_a_share_of_requests_to_the_canary_without_routing_any() -> None:
    route = _route(render(_model(), stable_version="v1", canary_version="v2", canary_weight=0, mirror_percent=20))

    rule = route["spec"]["rules"][0]
    assert [b["weight"] for b in rule["backendRefs"]] == [100, 0]
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "", "kind": "Service", "name": "yolo-v2-predictor", "port": 80},
        "percent": 20}}]


def test_no_mirror_filter_without_a_canary_or_outside_the_shadow_stage() -> None:
    for manifests in (render(_model(), mirror_percent=20),
                      render(_model(), stable_version="v1", canary_version="v2", canary_weight=10)):
        assert "filters" not in _route(manifests)["spec"]["rules"][0]


def test_a_sticky_header_keeps_a_client_on_one_version_through_session_persistence() -> None:
    model = _model(rollout={"stickyHeader": "x-session-id"})

    route = _route(render(model, stable_version="v1", canary_version="v2", canary_weight=10))

    assert route["spec"]["rules"][0]["sessionPersistence"] == {"sessionName": "x-session-id", "type": "Header"}


def test_a_promotion_renders_only_the_new_stable_version_so_the_old_one_is_pruned() -> None:
    manifests = render(_model(), stable_version="v2")

    assert [m["metadata"]["name"] for m in manifests] == ["yolo-v2", "yolo", "yolo"]
    assert [(b["name"], b["weight"]) for b in _route(manifests)["spec"]["rules"][0]["backendRefs"]] == [
        ("yolo-v2-predictor", 100)]


def test_a_rolled_back_knative_canary_keeps_its_revision_at_zero_percent() -> None:
    model = _model(rollout={"trafficRouter": "knative"})

    (isvc,) = render(model, stable_version="v1", canary_version="v2", canary_weight=0)

    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_a_canary_that_is_the_stable_version_or_a_mirror_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="also the stable"):
        render(_model(), stable_version="v1", canary_version="v1", canary_weight=10)
    with pytest.raises(ValueError, match="mirror_percent"):
        render(_model(), stable_version="v1", canary_version="v2", mirror_percent=101)


def test_knative_router_renders_one_inferenceservice_with_canary_traffic_percent_and_no_route() -> None:
    model = _two_process(rollout={"trafficRouter": "knative"})

    plain = render(model)
    canary = render(model, stable_version="v1", canary_version="v2", canary_weight=25)

    assert [m["kind"] for m in plain] == ["InferenceService"]
    assert plain[0]["metadata"]["name"] == "yolo"
    assert plain[0]["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert "canaryTrafficPercent" not in plain[0]["spec"]["predictor"]
    assert canary[0]["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert canary[0]["metadata"]["labels"]["serving.vss.ai/version"] == "v2"
    containers = _containers(canary[0])
    # Knative serves one port and refuses probes on the second container.
    assert "ports" not in containers["kserve-container"]
    assert "readinessProbe" not in containers["kserve-container"]
    assert [p["containerPort"] for p in containers["transformer-container"]["ports"]] == [8080]


def test_deployment_modes_are_configurable_for_newer_kserve_names() -> None:
    config = RenderConfig(raw_deployment_mode="Standard")

    isvc = render(_model(), config)[0]

    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


def test_without_a_uid_there_are_no_owner_references() -> None:
    model = _model()
    model.metadata.uid = None

    assert all("ownerReferences" not in m["metadata"] for m in render(model))


def test_replicas_and_model_service_account_come_through() -> None:
    model = _model(predictor={"minReplicas": 2, "maxReplicas": 5})

    predictor = render(model, RenderConfig(model_service_account="models-s3"))[0]["spec"]["predictor"]

    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    assert predictor["serviceAccountName"] == "models-s3"


def test_manifests_share_no_objects_so_a_caller_may_edit_one_safely() -> None:
    isvc, route, policy = render(_two_process())

    isvc["metadata"]["labels"]["x"] = "y"
    _containers(isvc)["kserve-container"]["securityContext"]["privileged"] = True

    assert "x" not in isvc["spec"]["predictor"]["labels"]
    assert "privileged" not in _containers(isvc)["transformer-container"]["securityContext"]
    assert "x" not in route["metadata"]["labels"] and "x" not in policy["metadata"]["labels"]


def test_canary_weight_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="canary_weight"):
        render(_model(), canary_version="v1", canary_weight=101)


@pytest.mark.parametrize(("uri", "path"), [
    ("s3://models/yolo/v2/model.onnx", "/mnt/models/model.onnx"),
    # KServe mounts the claim at /mnt/models with subPath dir/resnet.pt: the mount is the file itself.
    ("pvc://claim/dir/resnet.pt", "/mnt/models"),
    ("https://example.com/m.onnx?x=1", "/mnt/models/m.onnx"),
    ("gs://bucket/folder/", "/mnt/models"),
])
def test_model_path_is_where_kserve_puts_the_model_file(uri: str, path: str) -> None:
    assert model_path(uri) == path


def test_every_child_matches_the_child_selector() -> None:
    selector = dict(part.split("=") for part in child_selector("yolo").split(","))

    for manifest in render(_model()):
        assert selector.items() <= manifest["metadata"]["labels"].items()


def test_batches_in_flight_reach_the_predictor_and_stay_within_one_to_eight() -> None:
    args = _containers(render(_model(predictor={"batching": {"maxInFlight": 1}}))[0])["kserve-container"]["args"]
    assert args[args.index("--max_inflight_batches") + 1] == "1"
    default = _containers(render(_model())[0])["kserve-container"]["args"]
    assert default[default.index("--max_inflight_batches") + 1] == "2"
    for bad in (0, 9):
        with pytest.raises(ValueError, match=r"max_in_flight|maxInFlight"):
            _model(predictor={"batching": {"maxInFlight": bad}})


def _startup_budget_s(container: dict[str, Any]) -> int:
    probe = container["startupProbe"]
    return int(probe["periodSeconds"] * probe["failureThreshold"])


@pytest.mark.parametrize("router", ["gatewayapi", "knative"])
def test_the_transformer_is_given_a_startup_probe_as_long_as_its_wait_for_the_predictor_and_more(
        router: str) -> None:
    """The transformer listens only once load() has the predictor's model config, which it waits for up to
    --predictor_wait_s; without a startup probe its liveness probe (3 x 10 s) restarts it during a slow warm-up."""
    from vss_api.serving_flags import PREDICTOR_WAIT_S, transformer_parser

    (isvc, *_) = render(_two_process(rollout={"trafficRouter": router}))
    transformer = _containers(isvc)["transformer-container"]
    wait_s = transformer_parser().parse_args([*transformer["args"], "--model_name", "yolo"]).predictor_wait_s
    assert wait_s == PREDICTOR_WAIT_S
    assert transformer["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert _startup_budget_s(transformer) >= wait_s + 60
    liveness = transformer["livenessProbe"]
    assert _startup_budget_s(transformer) > liveness["periodSeconds"] * liveness["failureThreshold"]


def test_the_predictor_startup_probe_allows_the_whole_wait_the_transformer_grants_it() -> None:
    from vss_api.serving_flags import PREDICTOR_WAIT_S

    isvc = render(_two_process())[0]
    containers = _containers(isvc)
    predictor, transformer = containers["kserve-container"], containers["transformer-container"]
    assert PREDICTOR_WAIT_S <= _startup_budget_s(predictor) < _startup_budget_s(transformer)


def test_a_cpu_or_memory_request_without_a_limit_gets_the_request_as_its_limit() -> None:
    """Else KServe's defaulting webhook gives the container its configured default limit (cpu 1), below a
    larger request, and the Deployment KServe writes is invalid."""
    model = _model(predictor={"resources": {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "4Gi"}}})
    isvc = render(model)[0]
    resources = {c["name"]: c["resources"] for c in isvc["spec"]["predictor"]["containers"]}["kserve-container"]
    assert resources["limits"] == {"cpu": "2", "memory": "4Gi"}


def _named(name: str, namespace: str, version: str = "v1") -> VSSModel:
    return VSSModel.model_validate({
        "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"task": "classification", "version": version,
                 "versions": [{"name": version, "storageUri": "pvc://m/classifier.onnx"}]}})


def test_a_host_label_of_63_characters_under_kserves_default_domain_template_is_accepted() -> None:
    # <name>-<version>-predictor-<namespace>: 20 + 1 + 2 + 10 + 1 + 29 = 63
    assert kserve_host_problem(_named("n" * 20, "s" * 29)) is None


def test_one_character_more_in_the_namespace_is_refused_naming_the_label_and_what_to_shorten() -> None:
    problem = kserve_host_problem(_named("n" * 20, "s" * 30))
    assert problem is not None
    assert f"'{'n' * 20}-v1-predictor-{'s' * 30}' has 64 characters, more than 63" in problem
    assert "shorten metadata.name, the version name or the namespace by 1" in problem


def test_a_cluster_whose_domain_template_puts_the_namespace_in_a_label_of_its_own_accepts_the_long_namespace() -> None:
    config = RenderConfig(kserve_domain_template="{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}")
    assert kserve_host_problem(_named("n" * 20, "s" * 50), config) is None


def test_a_cpu_model_renders_one_container_that_runs_the_model_on_the_transformers_ports_and_probes() -> None:
    """Single-process mode, the default on the CPU: KServe routes to the one `kserve-container`, which answers the
    client API, probes and metrics on 8080/8081 with the predictor's image and resources (the model's cores)."""
    model = _model(predictor={"resources": {"requests": {"cpu": "2"}}})
    config = RenderConfig(cpu_image="reg/cpu:1", gpu_image="reg/gpu:1")

    isvc = render(model, config)[0]

    pod = isvc["spec"]["predictor"]
    (container,) = pod["containers"]
    version = model.spec.served_version()
    assert container["name"] == "kserve-container"
    assert (container["image"], container["command"]) == ("reg/cpu:1", ["python", "-m", "vss_cli.single_process"])
    assert container["args"] == single_process_args(model.spec, version, "/mnt/models/best.onnx", 8080, 8081,
                                                    model_name="yolo")
    assert not any(a.startswith("--predictor_host") or a == "--enable_predictor_health_check"
                   for a in container["args"])
    assert container["env"] == [{"name": "STORAGE_URI", "value": "s3://models/yolo/v2/best.onnx"},
                                {"name": "PROTOCOL", "value": "v2"}]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"},
                                  {"name": "grpc", "containerPort": 8081, "protocol": "TCP"}]
    assert [container[p]["httpGet"] for p in ("startupProbe", "readinessProbe", "livenessProbe")] == [
        {"path": "/v2/health/live", "port": 8080}, {"path": "/v2/health/ready", "port": 8080},
        {"path": "/v2/health/live", "port": 8080}]
    assert _startup_budget_s(container) >= _startup_budget_s(
        _containers(render(_two_process(predictor={"resources": {"requests": {"cpu": "2"}}}), config)[0])[
            "kserve-container"])
    assert container["resources"] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["annotations"]["prometheus.io/port"] == "8080"  # both components' series are on its /metrics


@pytest.mark.parametrize(("device", "processes", "containers"), [
    ("cpu", "auto", ["kserve-container"]),
    ("gpu", "auto", ["kserve-container", "transformer-container"]),
    ("cpu", "two", ["kserve-container", "transformer-container"]),
    ("gpu", "single", ["kserve-container"]),
])
def test_auto_runs_one_process_on_the_cpu_and_two_on_a_gpu_and_the_spec_may_force_either(
        device: str, processes: str, containers: list[str]) -> None:
    isvc = render(_model(predictor={"device": device, "processes": processes}))[0]
    assert list(_containers(isvc)) == containers


def test_a_single_process_gpu_model_gets_the_gpu_image_the_gpu_and_the_toleration() -> None:
    isvc = render(_model(predictor={"device": "gpu", "processes": "single"}),
                  RenderConfig(cpu_image="reg/cpu:1", gpu_image="reg/gpu:1"))[0]
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["image"] == "reg/gpu:1"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert isvc["spec"]["predictor"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_a_single_process_knative_model_serves_one_port_with_its_probes() -> None:
    (isvc,) = render(_model(rollout={"trafficRouter": "knative"}))
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    assert container["readinessProbe"]["httpGet"]["port"] == 8080


def test_the_result_cache_url_reaches_the_single_process_from_its_secret() -> None:
    cache = {"secretRef": {"name": "redis-auth", "key": "redis-url"}}
    (container,) = render(_model(transformer={"cache": cache}))[0]["spec"]["predictor"]["containers"]
    assert {"name": "VSS_CACHE_URL", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "redis-url"}}
            } in container["env"]
    assert "--cache" in container["args"]
