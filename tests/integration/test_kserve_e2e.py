"""Every example end to end on a real KServe: the VSSModel is reconciled by the operator (a real process) into an
InferenceService that KServe's webhooks admit and mutate, KServe's controller (Standard / raw mode) creates the
Deployment, Service and HPA, the deployment and replicaset controllers make the Pod, kube-scheduler binds it to
the node of tests/support/node_agent.py, which runs its containers from the Pod's own command, args, env and
volume mounts (the shipped models on a hostPath PersistentVolume, mounted as KServe's pod mutator says), honours
its probes and writes its status. Then a v2 request goes to the address and target port the Service's
EndpointSlice names, and `kubectl wait` sees the InferenceService Ready, and the VSSModel Ready.

Then two canary rollouts on the same stack, judged on the metrics a real Prometheus scrapes from the Pods KServe
created (discovered from the apiserver's Pods as the chart's
PodMonitor selects them, see PodDiscovery): a healthy canary is promoted, one that fails on wide frames is rolled back.

What is emulated (nothing here can run a kubelet, a CNI or a gateway): the node agent in place of a kubelet
and container runtime (processes as root, resource limits and securityContext not enforced: it says so in an
Event); the traffic split, which tests/integration/rollout_traffic.py applies from the live HTTPRoute as a
gateway would, sending each request straight to a Ready endpoint of the version's Service.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.e2e import prometheus_server
from tests.e2e.prometheus_server import PrometheusServer
from tests.e2e.serving import vss_run
from tests.fixtures.faulty_graphs import picky_detector
from tests.fixtures.onnx_graphs import colour_cell_detector, save
from tests.integration.operator_fixtures import OperatorProcess
from tests.integration.rollout_traffic import TrafficLoop
from tests.support.apiserver import LocalCluster, TestBinaries, wait_until
from tests.support.kserve import KServeController
from tests.support.node_agent import NodeAgent
from tests.support.upstream_crds import upstream_crd_paths
from vss_api.vssmodel import NAME_AND_VERSION_LIMIT, NAME_BUDGET_MESSAGE, VSSModel
from vss_models.inference import OnnxClassifier
from vss_models.patterns import generate_pattern_image
from vss_models.scenes import generate_scene
from vss_models.timeseries.evaluation import ANOMALY_OUTPUTS, FORECAST_OUTPUTS, InProcess
from vss_operator.handlers import RETIRED_ANNOTATION
from vss_transformers.anomaly import AnomalyTask
from vss_transformers.forecasting import ForecastingTask

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "models" / "artifacts"
EXAMPLES = REPO / "examples"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
READY_TIMEOUT = 240.0  # a cold Pod here: imports, model load and warm-up at the largest batch, on 2 busy cores
PROMETHEUS_ENDPOINT = "cluster"
SEED = 777


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")


@dataclass
class Stack:
    cluster: LocalCluster
    kserve: KServeController
    agent: NodeAgent
    operator: OperatorProcess
    prometheus: PrometheusServer
    namespace: str

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.cluster.kubectl(*args, "-n", self.namespace, check=check, input=input).stdout

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        found = self.cluster.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        out: dict[str, Any] = json.loads(found.stdout)
        return out

    def endpoints(self, service: str, port: int = 80) -> list[tuple[str, int]]:
        """The Ready addresses of SERVICE with the target port behind its PORT, as kube-proxy would program
        them from the EndpointSlices (port 80 is KServe's HTTP port; 8081 its gRPC one)."""
        found = self.get("service", service)
        if found is None:
            return []
        name = next(p.get("name", "") for p in found["spec"]["ports"] if p["port"] == port)
        slices = json.loads(self.kubectl("get", "endpointslices", "-l", f"kubernetes.io/service-name={service}",
                                         "-o", "json"))["items"]
        return [(address, int(p["port"])) for s in slices for p in s.get("ports") or [] if p.get("name", "") == name
                for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
                for address in e["addresses"]]

    def diagnosis(self, isvc: str) -> str:
        pods = self.kubectl("get", "pods", "-l", f"{ISVC_LABEL}={isvc}", "-o", "wide", check=False)
        events = self.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False)
        logs = []
        for runner in self.agent.pods.values():
            if runner.namespace == self.namespace and isvc in runner.name:
                for c in [*runner.init, *runner.containers]:
                    text = self.agent.logs(self.namespace, runner.name, c.name)[-3000:]
                    logs.append(f"--- {runner.name}/{c.name}\n{text}")
        kserve = "\n".join(line for line in self.kserve.log_tail(400).splitlines()
                            if isvc in line and '"level":"error"' in line)[-3000:]
        return (f"{pods}\n{events[-4000:]}\n" + "\n".join(logs) + f"\nagent errors: {self.agent.errors[-5:]}"
                f"\nKServe's errors about {isvc}:\n{kserve}")


SCRAPED_PORT_NAMES = ("predictor-http", "http1", "http")  # the chart's PodMonitor's podMetricsEndpoints


class PodDiscovery:
    """Prometheus' targets from the apiserver's Pods, selected as the chart's PodMonitor selects them
    (charts/vss-serving/templates/model-podmonitor.yaml: label managed-by vss-operator, ports by name), with
    the namespace and pod target labels a PodMonitor adds. Debian's Prometheus is built without Kubernetes
    service discovery, so this thread does the discovery and hands Prometheus a file_sd list, refreshed
    every half second (Prometheus' own default Kubernetes SD watch is no faster)."""

    def __init__(self, cluster: LocalCluster, prometheus: PrometheusServer) -> None:
        from kubernetes import client

        self.api = cluster.api_client()
        self.core = client.CoreV1Api(self.api)
        self.prometheus = prometheus
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="pod-discovery", daemon=True)

    def __enter__(self) -> PodDiscovery:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        self.api.close()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                targets = {}
                pods = self.core.list_pod_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=vss-operator")
                for pod in pods.items:
                    if not pod.status.pod_ip or pod.metadata.deletion_timestamp:
                        continue
                    for container in pod.spec.containers:
                        for port in container.ports or []:
                            if port.name in SCRAPED_PORT_NAMES:
                                targets[f"{pod.status.pod_ip}:{port.container_port}"] = {
                                    "namespace": pod.metadata.namespace, "pod": pod.metadata.name,
                                    "container": container.name}
                if targets != self.prometheus.targets:
                    self.prometheus.set_targets(targets)
            except Exception as exc:  # an apiserver hiccup: the next round tries again
                self.errors.append(repr(exc))
            self.stopping.wait(0.5)


def _models_volume(stack_cluster: LocalCluster, namespace: str, name: str, path: Path) -> None:
    """A hostPath PersistentVolume holding PATH, pre-bound to the claim NAME (what a storage admin provisions)."""
    pv_name = f"{namespace}-{name}"
    manifests = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"},
                  "claimRef": {"namespace": namespace, "name": name}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
         "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv_name,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]
    stack_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                "items": manifests}))

    def bound() -> bool:
        phase = stack_cluster.kubectl("get", "pvc", name, "-n", namespace, "-o",
                                      "jsonpath={.status.phase}").stdout
        return phase == "Bound"

    wait_until(bound, timeout=60, interval=0.3, what=f"PVC {name} bound")


@pytest.fixture(scope="module")
def stack(k8s_binaries: TestBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("kserve-e2e")
    cluster = LocalCluster(k8s_binaries, workdir / "cluster", scheduler=True, controllers=(
        *LocalCluster.DEFAULT_CONTROLLERS, *LocalCluster.WORKLOAD_CONTROLLERS, "persistentvolume-binder-controller"))
    cluster.start(crds=[*upstream_crd_paths(), *sorted((REPO / "crds").glob("*.yaml"))])
    stopping: list[Any] = [cluster]
    try:
        kserve = KServeController(cluster)
        kserve.start()
        stopping.append(kserve)
        api = cluster.api_client()
        agent = NodeAgent(api, workdir / "node", backoff_s=2.0, cpu="64")
        agent.start()
        stopping.append(agent)
        with prometheus_server.prometheus_server(workdir / "prometheus") as prom, PodDiscovery(cluster, prom):
            namespace = cluster.create_namespace("e2e")
            _models_volume(cluster, namespace, "vss-models", ARTIFACTS)
            store = workdir / "rollout-models"
            store.mkdir()
            save(colour_cell_detector("yolov8"), store / "stable.onnx")
            save(colour_cell_detector("yolov8"), store / "healthy.onnx")
            save(picky_detector(64), store / "erroring.onnx")
            _models_volume(cluster, namespace, "rollout-models", store)
            operator = OperatorProcess(cluster, namespace, workdir / "operator.log",
                                       ["--prometheus", f"{PROMETHEUS_ENDPOINT}={prom.url}"])
            operator.start()
            operator.wait_leading()
            stopping.append(operator)
            try:
                yield Stack(cluster, kserve, agent, operator, prom, namespace)
            finally:
                print(f"--- operator log ---\n{operator.log()[-5000:]}\n--- kserve ---\n{kserve.log_tail(40)}")
    finally:
        for part in reversed(stopping):
            part.stop()


def _example(path: Path, namespace: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc["metadata"]["namespace"] = namespace
    return doc


def _isvc_ready(stack: Stack, isvc: str) -> None:
    """kubectl wait, as a user would, with the cluster's state in the message when it times out."""
    wait_until(lambda: stack.get("isvc", isvc), timeout=60, interval=0.3, what=f"InferenceService {isvc}")
    result = stack.cluster.kubectl("wait", "--for=condition=Ready", f"isvc/{isvc}", "-n", stack.namespace,
                                   f"--timeout={int(READY_TIMEOUT)}s", check=False, timeout=READY_TIMEOUT + 30)
    assert result.returncode == 0, f"{result.stderr}\n{stack.diagnosis(isvc)}"


def _vssm_ready(stack: Stack, name: str) -> dict[str, Any]:
    result = stack.cluster.kubectl("wait", "--for=condition=Ready", f"vssm/{name}", "-n", stack.namespace,
                                   "--timeout=60s", check=False)
    assert result.returncode == 0, f"{result.stderr}\n{stack.kubectl('get', 'vssm', name, '-o', 'yaml')}"
    found = stack.get("vssm", name)
    assert found is not None
    return found


def _service_client(stack: Stack, isvc: str) -> httpclient.InferenceServerClient:
    """A v2 REST client on a Ready endpoint of KServe's `<isvc>-predictor` Service (its target port)."""
    service = stack.get("service", f"{isvc}-predictor")
    assert service is not None, f"KServe made no Service {isvc}-predictor"
    endpoints = wait_until(lambda: stack.endpoints(f"{isvc}-predictor") or None, timeout=60, interval=0.5,
                           what=f"a ready endpoint of {isvc}-predictor")
    address, port = endpoints[0]
    return httpclient.InferenceServerClient(f"{address}:{port}", network_timeout=60, connection_timeout=30)


def _apply_and_serve(stack: Stack, example: str) -> tuple[str, str, httpclient.InferenceServerClient]:
    doc = _example(EXAMPLES / example, stack.namespace)
    name = doc["metadata"]["name"]
    stack.kubectl("apply", "-f", "-", input=json.dumps(doc))
    isvc = f"{name}-{doc['spec']['version']}"
    _isvc_ready(stack, isvc)
    _vssm_ready(stack, name)
    return name, isvc, _service_client(stack, isvc)


def _delete(stack: Stack, name: str, isvc: str) -> None:
    stack.kubectl("delete", "vssm", name, "--wait=true", "--timeout=60s")

    def gone() -> bool:
        pods = json.loads(stack.kubectl("get", "pods", "-l", f"{ISVC_LABEL}={isvc}", "-o", "json"))["items"]
        return not pods

    wait_until(gone, timeout=90, interval=0.5, what=f"the Pods of {isvc} gone")


def _infer(client: httpclient.InferenceServerClient, model: str, name: str, array: np.ndarray, datatype: str,
           outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    result = client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput(o, binary_data=True)
                                                    for o in outputs])
    return {o: result.as_numpy(o) for o in outputs}


def test_the_detection_example_served_by_the_pod_kserve_created_answers_as_vss_run_of_the_same_yaml(
        stack: Stack, tmp_path: Path) -> None:
    name, isvc, client = _apply_and_serve(stack, "detection.yaml")
    try:
        # What the closing note shows: the objects as KServe made them, and the Pod after KServe's mutation.
        print(stack.kubectl("get", "isvc,deploy,svc,hpa,pods", "-o", "wide"))
        pod = json.loads(stack.kubectl("get", "pods", "-l", f"{ISVC_LABEL}={isvc}", "-o", "json"))["items"][0]
        print(yaml.safe_dump({k: pod["spec"][k] for k in ("initContainers", "containers", "volumes")
                              if k in pod["spec"]}))
        mounts = {m["mountPath"]: m for c in pod["spec"]["containers"] for m in c.get("volumeMounts") or []}
        assert mounts["/mnt/models"]["subPath"] == "detector.onnx" and mounts["/mnt/models"]["readOnly"]
        scrape, pod_ip = pod["metadata"]["annotations"], pod["status"]["podIP"]
        # The right answer: what `vss run` serves for the same YAML here (tests/e2e/test_shipped_models.py ties
        # that path to in-process inference): the same objects, boxes within a pixel, in the same order.
        with vss_run(EXAMPLES / "detection.yaml", name, tmp_path) as local:
            local_client = httpclient.InferenceServerClient(local.rest_url)
            outputs = ("num_detections", "boxes", "scores", "class_ids")
            objects = 0
            for index in range(6):
                image = generate_scene(SEED, index).image
                pod, here = (_infer(c, name, "pixels", image, "UINT8", outputs) for c in (client, local_client))
                n = int(here["num_detections"][0])
                assert int(pod["num_detections"][0]) == n, index
                np.testing.assert_array_equal(pod["class_ids"][0][:n], here["class_ids"][0][:n])
                np.testing.assert_allclose(pod["boxes"][0][:n], here["boxes"][0][:n], atol=1.0)
                np.testing.assert_allclose(pod["scores"][0][:n], here["scores"][0][:n], atol=1e-4)
                objects += n
            local_client.close()
        assert objects >= 12, "the scenes should hold objects the shipped detector finds"
        tensor = httpclient.InferInput("pixels", list(image.shape), "UINT8")
        tensor.set_data_from_numpy(image, binary_data=True)
        shown = client.infer(name, [tensor], outputs=[httpclient.InferRequestedOutput(o, binary_data=False)
                                                     for o in ("num_detections", "class_ids", "scores")])
        print(f"v2 response from the Pod: {json.dumps(shown.get_response())[:1500]}")
        # The scrape annotations, after KServe's mutator, name a port whose /metrics holds the model's series
        # (with enable-prometheus-scraping "true" KServe rewrote the port to its queue-proxy's 9091).
        with urllib.request.urlopen(f"http://{pod_ip}:{scrape['prometheus.io/port']}{scrape['prometheus.io/path']}",
                                    timeout=10) as reply:
            page = reply.read().decode()
        assert re.search(rf'^inference_requests_total{{[^}}]*model_name="{name}"', page, re.M), page[:2000]
        # v2 gRPC on the Service's other port (8081 → the transformer's gRPC port), with KServe's own stubs.
        address, port = stack.endpoints(f"{isvc}-predictor", port=8081)[0]
        image = generate_scene(SEED, 0).image
        with grpc.insecure_channel(f"{address}:{port}") as channel:
            reply = GRPCInferenceServiceStub(channel).ModelInfer(pb.ModelInferRequest(
                model_name=name, inputs=[pb.ModelInferRequest.InferInputTensor(
                    name="pixels", datatype="UINT8", shape=list(image.shape))],
                raw_input_contents=[image.tobytes()]), timeout=60)
        outputs_by_name = dict(zip((o.name for o in reply.outputs), reply.raw_output_contents, strict=True))
        rest = _infer(client, name, "pixels", image, "UINT8", ("num_detections",))
        assert np.frombuffer(outputs_by_name["num_detections"], np.int32)[0] == rest["num_detections"][0]
    finally:
        _delete(stack, name, isvc)


@pytest.mark.parametrize("example", ["classification.yaml", "classification-torchscript.yaml"])
def test_the_classification_examples_answer_as_the_onnx_model_in_process(stack: Stack, example: str) -> None:
    name, isvc, client = _apply_and_serve(stack, example)
    try:
        reference = OnnxClassifier.load(ARTIFACTS / "classifier.onnx")
        for index in range(6):
            image = generate_pattern_image(SEED, index).image
            answer = _infer(client, name, "pixels", image, "UINT8", ("class_ids", "scores"))
            probabilities = reference.probabilities([image])[0]
            ids = answer["class_ids"][0].tolist()
            assert ids[0] == int(np.argmax(probabilities)), index
            np.testing.assert_allclose(answer["scores"][0], probabilities[ids], atol=1e-3)
    finally:
        _delete(stack, name, isvc)


def test_the_anomaly_example_gives_the_in_process_verdicts(stack: Stack) -> None:
    from vss_models.timeseries.datasets import Split, labelled_windows, rng_for

    name, isvc, client = _apply_and_serve(stack, "anomaly.yaml")
    try:
        windows = labelled_windows(rng_for(7, Split.TEST), per_kind=2, normal=8, window=100).values.astype(np.float32)
        local = InProcess.open(AnomalyTask(VSSModel.from_yaml_file(EXAMPLES / "anomaly.yaml").spec.anomaly),
                               ARTIFACTS / "anomaly.onnx")
        served, expected = _infer(client, name, "series", windows, "FP32", ANOMALY_OUTPUTS), local(windows)
        np.testing.assert_array_equal(served["is_anomaly"], expected["is_anomaly"])
        np.testing.assert_allclose(served["anomaly_score"], expected["anomaly_score"], atol=1e-5)
    finally:
        _delete(stack, name, isvc)


def test_the_forecasting_example_gives_the_in_process_forecast(stack: Stack) -> None:
    from vss_models.timeseries.sensors import WEEK, Site, impute, observe, synthesize

    name, isvc, client = _apply_and_serve(stack, "forecasting.yaml")
    try:
        model = VSSModel.from_yaml_file(EXAMPLES / "forecasting.yaml")
        lookback = model.spec.forecasting.lookback
        rng = np.random.default_rng(11)
        stream = impute(observe(synthesize(Site.draw(rng), WEEK, rng).values, rng))
        windows = np.stack([stream[i * 5:i * 5 + lookback] for i in range(8)]).astype(np.float32)
        version = next(v for v in model.spec.versions if v.name == model.spec.version)
        local = InProcess.open(ForecastingTask(model.spec.forecasting),
                               ARTIFACTS / version.storage_uri.rsplit("/", 1)[1])
        served, expected = _infer(client, name, "series", windows, "FP32", FORECAST_OUTPUTS), local(windows)
        for output in FORECAST_OUTPUTS:
            np.testing.assert_allclose(served[output], expected[output], atol=1e-4, err_msg=output)
    finally:
        _delete(stack, name, isvc)


def _named(stack: Stack, name: str, version: str) -> dict[str, Any]:
    doc = _example(EXAMPLES / "classification.yaml", stack.namespace)
    doc["metadata"]["name"] = name
    doc["spec"]["version"] = doc["spec"]["versions"][0]["name"] = version
    return doc


def test_names_kserve_cannot_host_are_refused_before_any_inferenceservice_and_the_longest_it_can_serves(
        stack: Stack) -> None:
    """Two budgets, both KServe's (v0.20): the Pod label `app: isvc.<name>-<version>-predictor` (at most 63,
    checked by the CRD: NAME_AND_VERSION_LIMIT), and the host KServe makes from its domainTemplate, by default
    `<name>-<version>-predictor-<namespace>.<domain>`, whose first DNS label also holds at most 63. The CRD cannot
    see the namespace, so the operator checks the host: a name the CRD admits but KServe could not host gets
    Stalled=True with the reason, and no InferenceService (KServe's controller would fail it only after
    admission: "failed creating host name ... must be no more than 63 characters")."""
    over_label = _named(stack, "d" * 40, "v" + "1" * (NAME_AND_VERSION_LIMIT - 40))  # 48 together
    refused = stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=json.dumps(over_label),
                                    check=False)
    assert refused.returncode != 0 and NAME_BUDGET_MESSAGE in refused.stderr, refused.stderr

    # The CRD's longest (47 together) in this namespace: the host label is 47 + 1 + 10 + 1 + len(namespace).
    crd_longest = _named(stack, "e" * 40, "v" + "1" * (NAME_AND_VERSION_LIMIT - 41))
    stack.kubectl("apply", "-f", "-", input=json.dumps(crd_longest))

    def stalled() -> dict[str, Any] | None:
        conditions = ((stack.get("vssm", "e" * 40) or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Stalled" and c["status"] == "True"), None)

    condition = wait_until(stalled, timeout=60, interval=0.3, what="the over-long host refused in status")
    assert condition["reason"] == "InvalidSpec" and "more than 63" in condition["message"], condition
    assert "domainTemplate" in condition["message"] and "namespace" in condition["message"]
    assert stack.get("isvc", f"{'e' * 40}-{crd_longest['spec']['version']}") is None
    stack.kubectl("delete", "vssm", "e" * 40)

    # The longest name KServe can host here: a host label of exactly 63.
    name = "c" * 30
    version = "v" + "1" * (63 - len(f"{name}--predictor-{stack.namespace}") - 1)
    doc = _named(stack, name, version)
    isvc = f"{name}-{version}"
    assert len(f"{isvc}-predictor-{stack.namespace}") == 63
    stack.kubectl("apply", "-f", "-", input=json.dumps(doc))
    try:
        _isvc_ready(stack, isvc)
        _vssm_ready(stack, name)
        image = generate_pattern_image(SEED, 0).image
        answer = _infer(_service_client(stack, isvc), name, "pixels", image, "UINT8", ("class_ids",))
        reference = OnnxClassifier.load(ARTIFACTS / "classifier.onnx")
        assert answer["class_ids"][0][0] == int(np.argmax(reference.probabilities([image])[0]))
    finally:
        _delete(stack, name, isvc)


# --- canary rollouts on real KServe ------------------------------------------------------------------------

# Long enough for the test to see the old version retired, serving, after the promotion's status.
SCALE_DOWN_DELAY_S = 10
SQUARE, WIDE = (64, 64), (64, 128)  # (H, W): the erroring canary fails on the wide frame's 32x64 letterbox


@dataclass
class ServiceVersion:
    """One version's `<isvc>-predictor` Service, called as a gateway would: at a Ready endpoint."""

    stack: Stack
    model: str
    isvc: str

    def infer(self, side: int) -> int:
        """One v2 REST request through the version's transformer; `side` picks the square or the wide frame."""
        h, w = SQUARE if side == SQUARE[1] else WIDE
        pixels = np.full((1, h, w, 3), 40, np.uint8)
        pixels[0, : h // 2, : w // 2, 0] = 250
        raw = pixels.tobytes()
        header = json.dumps({"inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "UINT8",
                                         "parameters": {"binary_data_size": len(raw)}}]}).encode()
        ready = self.stack.endpoints(f"{self.isvc}-predictor")
        if not ready:  # what a gateway answers for a backend with no ready endpoint
            return 503
        address, port = ready[0]
        request = urllib.request.Request(
            f"http://{address}:{port}/v2/models/{self.model}/infer", data=header + raw,
            headers={"Inference-Header-Content-Length": str(len(header)),
                     "Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


def _rollout_doc(stack: Stack, name: str, canary: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
        "metadata": {"name": name, "namespace": stack.namespace},
        "spec": {
            "task": "detection", "version": "v1",
            "versions": [{"name": "v1", "storageUri": "pvc://rollout-models/stable.onnx"},
                         {"name": "v2", "storageUri": f"pvc://rollout-models/{canary}.onnx"}],
            "predictor": {"runtime": "onnxruntime", "threads": 1, "batching": {"maxBatchSize": 4, "maxLatencyMs": 0},
                          "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}},
            "transformer": {"detection": {"inputSize": 64}},
            "rollout": {"steps": [{"weight": 25, "pause": "4s"}, {"weight": 50, "pause": "4s"}],
                        "progressDeadline": "240s", "scaleDownDelay": f"{SCALE_DOWN_DELAY_S}s",
                        "analysis": {"interval": "4s", "failureLimit": 2, "noDataLimit": 5, "minRequests": 3,
                                     "maxErrorRate": 0.05, "maxP95LatencyMs": 5000,
                                     "prometheus": {"endpoint": PROMETHEUS_ENDPOINT, "timeout": "2s"}}},
        },
    }


def _events(stack: Stack, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(stack.kubectl(
        "get", "events", "--field-selector", f"involvedObject.kind=VSSModel,involvedObject.name={name}",
        "-o", "json"))["items"]
    return sorted(items, key=lambda e: e.get("eventTime") or e.get("lastTimestamp") or "")


def _timeline(stack: Stack, name: str, start: float) -> str:
    lines = []
    for e in _events(stack, name):
        stamp = e.get("eventTime") or e.get("lastTimestamp") or e.get("firstTimestamp")
        at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - start if stamp else 0.0
        lines.append(f"  +{at:6.1f}s {e['type']:<7} {e['reason']}: {e['message']}")
    return "\n".join(lines)


def _rollout(stack: Stack, name: str, canary: str) -> tuple[dict[str, Any], TrafficLoop, float, str]:
    doc = _rollout_doc(stack, name, canary)
    stack.kubectl("apply", "-f", "-", input=json.dumps(doc))
    _isvc_ready(stack, f"{name}-v1")
    _vssm_ready(stack, name)
    versions = {v: ServiceVersion(stack, name, f"{name}-{v}") for v in ("v1", "v2")}
    loop = TrafficLoop(stack.cluster.api_client(), stack.namespace, name, versions,
                       sides=(SQUARE[1], WIDE[1]), rate_hz=8.0, limit_s=400.0)
    with loop:
        started = time.time()
        doc["spec"]["version"] = "v2"
        stack.kubectl("apply", "-f", "-", input=json.dumps(doc))

        def ended() -> dict[str, Any] | None:
            status: dict[str, Any] = (stack.get("vssm", name) or {}).get("status") or {}
            done = status.get("phase") == "RolledBack" or (status.get("phase") == "Stable"
                                                            and status.get("stableVersion") == "v2")
            return status if done else None

        try:
            status = wait_until(ended, timeout=360, interval=0.5, what=f"the rollout of {name} to end")
        except Exception:
            print(_timeline(stack, name, started))
            print(stack.diagnosis(f"{name}-v2"))
            raise
        wall = time.time() - started
    return status, loop, wall, _timeline(stack, name, started)


def test_a_healthy_canary_on_kserve_is_promoted_on_the_metrics_prometheus_scrapes_from_its_pods(
        stack: Stack) -> None:
    status, loop, wall, timeline = _rollout(stack, "promoted", "healthy")
    print(f"promoted rollout: {wall:.1f} s wall\n{timeline}\nsent: {dict(loop.sent)}")
    try:
        assert (status["phase"], status["stableVersion"]) == ("Stable", "v2"), json.dumps(status, indent=1)
        # v1 left the route but is kept for the scale-down delay (a gateway applies new weights late), serving,
        # and is deleted after it, on the deadline its annotation holds.
        retired = wait_until(lambda: ((stack.get("isvc", "promoted-v1") or {}).get("metadata", {})
                                      .get("annotations", {}).get(RETIRED_ANNOTATION)),
                             timeout=SCALE_DOWN_DELAY_S / 2, interval=0.2, what="v1 marked retired, not deleted")
        assert ServiceVersion(stack, "promoted", "promoted-v1").infer(SQUARE[1]) == 200
        wait_until(lambda: stack.get("isvc", "promoted-v1") is None, timeout=SCALE_DOWN_DELAY_S + 60,
                   interval=0.5, what="v1's InferenceService deleted after the scale-down delay")
        deleted_after_s = time.time() - datetime.datetime.fromisoformat(retired).timestamp()
        assert deleted_after_s >= SCALE_DOWN_DELAY_S, deleted_after_s
        reasons = [e["reason"] for e in _events(stack, "promoted")]
        assert "StepAdvanced" in reasons and "Promoted" in reasons, reasons
        assert loop.sent[("v2", 200)] > 0 and not [k for k in loop.sent if k[1] >= 500]
        # The analysis read the canary's own Pods: Prometheus has its predictor's requests by pod.
        series = stack.prometheus.query(
            f'sum by (pod) (inference_requests_total{{namespace="{stack.namespace}",model_name="promoted",'
            f'version="v2",component="predictor"}})')
        assert series and all(labels["pod"].startswith("promoted-v2-predictor") for labels, _ in series), series
    finally:
        stack.kubectl("delete", "vssm", "promoted", "--wait=false")


def test_a_canary_failing_on_wide_frames_on_kserve_is_rolled_back_and_v1_keeps_serving(stack: Stack) -> None:
    status, loop, wall, timeline = _rollout(stack, "rolled-back", "erroring")
    print(f"rolled-back rollout: {wall:.1f} s wall\n{timeline}\nsent: {dict(loop.sent)}")
    try:
        assert (status["phase"], status["stableVersion"], status["canaryWeight"]) == ("RolledBack", "v1", 0), \
            json.dumps(status, indent=1)
        assert "error rate" in status["rollout"]["lastCheck"]["message"]
        reasons = [e["reason"] for e in _events(stack, "rolled-back")]
        assert "AnalysisFailed" in reasons, reasons
        assert any(version == "v2" and code >= 500 for version, code in loop.sent), loop.sent
        assert ServiceVersion(stack, "rolled-back", "rolled-back-v1").infer(WIDE[1]) == 200
    finally:
        stack.kubectl("delete", "vssm", "rolled-back", "--wait=false")
