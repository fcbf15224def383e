"""Every query of the chart's Grafana dashboard, read from the committed JSON with its template variables filled in
as Grafana fills them, executed as Grafana executes it (a range query) against a real Prometheus that scrapes real
processes: the operator leading a canary rollout of a VSSModel (25% on v2) against the real kube-apiserver, a
predictor process per version, and a predictor + transformer pair of v1, all of which served requests. Each query
must return at least one series with a number in it; so must each variable's `label_values`.

The GPU memory panel's series exist only where a predictor runs on an NVIDIA GPU (no machine here has one): its
query runs too, and must answer with no series at all rather than a made-up zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import jpeg, scene
from tests.e2e.prometheus_server import PrometheusServer
from tests.e2e.serving_pair import Pair, serving_pair
from tests.integration.operator_fixtures import (
    OperatorProcess,
    operator_factory_fixture,  # noqa: F401 - the fixtures
)
from tests.integration.rollout_fixtures import (  # noqa: F401 - the fixtures
    SIDE,
    Rollout,
    RolloutFactory,
    model_doc,
    model_files_fixture,
    operator_with_prometheus_fixture,
    prometheus_fixture,
    rollout_fixture,
)
from tests.support.dashboard import committed, generator, panel_queries, substitute
from vss_api.vssmodel import VSSModelSpec

NAME = "dash"
# The canary stays at its first step for the whole test: no check is due before 10 minutes.
ROLLOUT = {"steps": [{"weight": 25, "pause": "10m"}], "analysis": {"interval": "10m"}}
RATE_INTERVAL = "1m"  # Grafana's $__rate_interval for a 1s scrape interval and a short time range
WINDOW_S = 120.0  # the range the panels are asked for (now-2m to now)


@dataclass
class Cluster:
    prometheus: PrometheusServer
    operator: OperatorProcess
    rollout: Rollout
    pair: Pair
    namespace: str

    def targets(self) -> list[str]:
        return [self.operator_instance, *(p.instance for p in self.rollout.predictors.values()),
                self.pair.predictor.rest_url, self.pair.transformer.rest_url]

    @property
    def operator_instance(self) -> str:
        return f"127.0.0.1:{self.operator.port}"


@pytest.fixture
def cluster(prometheus: PrometheusServer, operator: OperatorProcess, rollout: RolloutFactory,
            model_files: dict[str, Path], k8s_namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    # The operator's own series carry the VSSModel's namespace (its ServiceMonitor honours them): no target label.
    prometheus.scrape(f"127.0.0.1:{operator.port}")
    setup = rollout(NAME, "healthy", **ROLLOUT)
    setup.start()
    setup.wait_status(lambda s: s.get("phase") == "Progressing" and s.get("canaryWeight") == 25,
                      "the canary at 25%")
    spec = VSSModelSpec.model_validate(
        model_doc(NAME, k8s_namespace, (model_files["stable"], model_files["healthy"]), **ROLLOUT)["spec"])
    with serving_pair(spec, NAME, model_files["stable"], tmp_path) as pair:
        for process in (pair.predictor, pair.transformer):
            prometheus.scrape(process.rest_url, pod=f"{NAME}-v1-{process.role}", namespace=k8s_namespace)
        found = Cluster(prometheus, operator, setup, pair, k8s_namespace)
        for target in found.targets():  # scraped before the requests: rate() has a sample on either side
            prometheus.scraped_after(target, 0.0)
        yield found


def _serve(cluster: Cluster) -> None:
    """Requests to each version's predictor and through the transformer, a bad image among them (client error)."""
    for _ in range(20):
        for predictor in cluster.rollout.predictors.values():
            assert predictor.infer(SIDE) == 200
    client = httpclient.InferenceServerClient(cluster.pair.transformer.rest_url)
    try:
        for payload in [jpeg(scene())] * 10 + [b"not an image"]:
            tensor = httpclient.InferInput("image", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([payload], dtype=object))
            try:
                client.infer(NAME, [tensor])
            except InferenceServerException as exc:
                assert payload == b"not an image", exc
    finally:
        client.close()


def _variables(cluster: Cluster) -> dict[str, str]:
    """The variables as Grafana formats a multi-value selection for Prometheus: a regex alternation."""
    return {"datasource": "prometheus", "namespace": cluster.namespace, "model": NAME, "version": "(v1|v2)",
            "component": "(predictor|transformer)", "__rate_interval": RATE_INTERVAL}


def test_every_panel_query_and_every_variable_returns_series_from_the_real_processes(cluster: Cluster) -> None:
    _serve(cluster)
    served = time.time()
    for target in cluster.targets():  # every process scraped since it served
        cluster.prometheus.scraped_after(target, served)
    end = time.time()
    dashboard = committed()
    gpu_only = {spec.title for _, row in generator().ROWS for spec in row if spec.gpu_only}
    variables = _variables(cluster)

    # The panels, as Grafana asks for them: a range query over the time picked, here the last two minutes.
    report: list[str] = []
    empty: list[str] = []
    queries = panel_queries(dashboard)
    for query in queries:
        expr = substitute(query.expr, variables)
        found = cluster.prometheus.query_range(expr, end - WINDOW_S, end, 15)
        numbers = [v for _, values in found for v in values if math.isfinite(v)]
        labels = sorted({" ".join(f"{k}={v}" for k, v in sorted(s.items()) if k != "namespace") for s, _ in found})
        report.append(f"{query.panel} [{query.ref_id}]: {len(found)} series: {'; '.join(labels)}")
        if query.panel in gpu_only:
            assert found == [], f"{query.panel}: series on a machine without a GPU: {found}"
            continue
        if not found or not numbers:
            empty.append(f"{query.panel} [{query.ref_id}]: {expr}")
    print(f"{len(queries)} queries of {len({q.panel for q in queries})} panels:\n" + "\n".join(report))
    assert empty == [], "queries without series:\n" + "\n".join(empty)
    p95 = next(q for q in queries if q.panel == "p95 latency by stage")
    stages = {(s["component"], s["stage"]) for s, _ in cluster.prometheus.query_range(
        substitute(p95.expr, variables), end - WINDOW_S, end, 15)}
    assert stages == {("predictor", "predict"), ("transformer", "preprocess"), ("transformer", "predict"),
                      ("transformer", "postprocess"), ("transformer", "total")}

    # The variables' label_values(MATCH, LABEL), MATCH's own variables filled in as above.
    listed: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = variable["query"].removeprefix("label_values(").removesuffix(")")
            match, _, label = inner.rpartition(",")
            listed[variable["name"]] = cluster.prometheus.label_values(label.strip(), substitute(match.strip(),
                                                                                                 variables))
    print(f"variables: {listed}")
    assert cluster.namespace in listed["namespace"]
    assert listed["model"] == [NAME]
    assert listed["version"] == ["v1", "v2"]
    component = next(v for v in dashboard["templating"]["list"] if v["name"] == "component")
    assert component["query"].split(",") == cluster.prometheus.label_values(
        "component", f'inference_requests_total{{namespace="{cluster.namespace}", model_name="{NAME}"}}')

    # The rollout panels' series say what the operator did: Progressing, 75/25, Ready.
    selector = f'namespace="{cluster.namespace}", model_name="{NAME}"'
    assert [s["phase"] for s, _ in cluster.prometheus.query(f"vss_model_phase{{{selector}}} == 1")] == ["Progressing"]
    weights = {(s["version"], s["role"]): v
               for s, v in cluster.prometheus.query(f"vss_model_traffic_weight{{{selector}}}")}
    assert weights == {("v1", "stable"): 75, ("v2", "canary"): 25}
    assert [v for _, v in cluster.prometheus.query(f"vss_model_ready{{{selector}}}")] == [1]
