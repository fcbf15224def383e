"""The data plane does not depend on the control plane: a served model keeps answering every request while the
operator is SIGKILLed and restarted and while the kube-apiserver is restarted.

Real: etcd, kube-apiserver, the operator process reconciling the VSSModel, and the two serving processes under a
steady load of v2 requests. Not real: no kubelet runs here, so the serving processes are the `vss run` pair the
pod would run (same command lines, `vss_api.serving_flags`), started beside the cluster rather than by it. What
this proves is that nothing in the serving processes calls the apiserver or the operator at run time (no watch,
no status write, no lookup), so their outages cost clients nothing."""

from __future__ import annotations

import http.client
import json
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DETECTION_YAML, jpeg, scene, write_model_yaml
from tests.e2e.serving import Served, vss_run
from tests.fixtures.onnx_graphs import colour_cell_detector, save
from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorFactory,
    OperatorProcess,
    operator_factory_fixture,
)
from tests.support.apiserver import LocalCluster, wait_until

FRAME = jpeg(scene())
MIN_REQUESTS_PER_PHASE = 20


def _image_request() -> tuple[bytes, dict[str, str]]:
    blob = len(FRAME).to_bytes(4, "little") + FRAME
    head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": len(blob)}}]}).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head)),
                         "Content-Type": "application/octet-stream"}


@dataclass
class Load:
    """Requests one after another on a keep-alive connection, each outcome counted under the current phase."""

    served: Served
    phase: str = "before"
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        body, headers = _image_request()
        connection = http.client.HTTPConnection("127.0.0.1", self.served.http_port, timeout=10)
        while not self.stop.is_set():
            try:
                connection.request("POST", f"/v2/models/{self.served.name}/infer", body, headers)
                reply = connection.getresponse()
                reply.read()
                outcome = str(reply.status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.served.http_port, timeout=10)
            with self.lock:
                self.outcomes.setdefault(self.phase, Counter())[outcome] += 1
        connection.close()

    def enter(self, phase: str) -> None:
        with self.lock:
            self.phase = phase

    def served_in(self, phase: str) -> int:
        with self.lock:
            return self.outcomes.get(phase, Counter())["200"]

    def wait_served(self, phase: str) -> None:
        wait_until(lambda: self.served_in(phase) >= MIN_REQUESTS_PER_PHASE, timeout=60,
                   what=f"{MIN_REQUESTS_PER_PHASE} requests served while: {phase}")


@pytest.fixture
def served_model(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    model = save(colour_cell_detector("yolov8"), tmp_path / "cells-v8.onnx")
    yaml_path = write_model_yaml(tmp_path, "cells", DETECTION_YAML, model)
    with vss_run(yaml_path, "cells", tmp_path) as served:
        yield served, yaml_path


def _generation(cluster: LocalCluster, namespace: str) -> tuple[int, int | None]:
    body: dict[str, Any] = json.loads(cluster.kubectl("get", "vssmodel", "cells", "-n", namespace, "-o",
                                                      "json").stdout)
    return body["metadata"]["generation"], body.get("status", {}).get("observedGeneration")


def test_every_request_succeeds_while_the_operator_is_killed_and_the_apiserver_restarted(
        k8s_cluster: LocalCluster, k8s_namespace: str, operator_factory: OperatorFactory,
        served_model: tuple[Served, Path]) -> None:
    served, yaml_path = served_model
    operator = operator_factory()
    operator.wait_leading()
    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", str(yaml_path))
    wait_until(lambda: _generation(k8s_cluster, k8s_namespace)[1] == 1, timeout=60,
               what="the operator to reconcile the VSSModel", abort=operator.exit_reason)

    load = Load(served)
    sender = threading.Thread(target=load.run, daemon=True)
    sender.start()
    try:
        load.wait_served("before")

        load.enter("operator killed")
        operator.stop(signal.SIGKILL)
        load.wait_served("operator killed")
        load.enter("operator restarting")
        operator = operator_factory()
        operator.wait_leading()
        load.wait_served("operator restarting")

        load.enter("apiserver down")
        k8s_cluster.stop_apiserver()
        load.wait_served("apiserver down")
        load.enter("apiserver restarting")
        k8s_cluster.start_apiserver()
        k8s_cluster.wait_for_apiserver()
        load.wait_served("apiserver restarting")

        # The control plane came back too: an edit made now is reconciled.
        load.enter("after")
        k8s_cluster.kubectl("patch", "vssmodel", "cells", "-n", k8s_namespace, "--type", "merge", "-p",
                            json.dumps({"spec": {"transformer": {"maxConcurrency": 63}}}))
        wait_until(lambda: _generation(k8s_cluster, k8s_namespace) == (2, 2), timeout=60,
                   what="the restarted operator to reconcile an edit after the apiserver restart",
                   abort=operator.exit_reason)
        load.wait_served("after")
    finally:
        load.stop.set()
        sender.join(timeout=30)
    print({phase: dict(counts) for phase, counts in load.outcomes.items()})
    failed = {phase: {k: v for k, v in counts.items() if k != "200"} for phase, counts in load.outcomes.items()}
    assert not any(failed.values()), f"requests that did not succeed, by phase: {failed}"
