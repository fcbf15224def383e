"""The rollout's Prometheus queries against a real Prometheus scraping real predictor processes of two
versions, started with the flags `vss run` gives them: each version's error ratio and p95 latency come
out as the processes themselves counted them, and neither version's numbers leak into the other's."""

from __future__ import annotations

import asyncio
import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import prometheus_server
from tests.e2e.predictor_process import Predictor, start_predictor, stop
from tests.e2e.prometheus_server import PrometheusServer
from tests.fixtures.faulty_graphs import picky_detector
from tests.fixtures.onnx_graphs import colour_cell_detector, save
from vss_api.vssmodel import VSSModelSpec
from vss_operator.prometheus import PrometheusClient
from vss_operator.promql import NoData, Sample, VersionQuery, VersionSample, query_for
from vss_operator.rollout import judge

REPO = Path(__file__).resolve().parents[2]
NAME = "cells"
SIDE = 64  # the size v2 accepts; any other size is a server error there


def make_spec(v1: Path, v2: Path) -> VSSModelSpec:
    return VSSModelSpec.model_validate({
        "task": "detection", "version": "v2",
        "versions": [{"name": "v1", "storageUri": str(v1)}, {"name": "v2", "storageUri": str(v2)}],
        "predictor": {"runtime": "onnxruntime", "threads": 1, "batching": {"maxBatchSize": 4, "maxLatencyMs": 0}},
        "transformer": {"detection": {"inputSize": SIDE, "rectangular": False}},
        "rollout": {"analysis": {"interval": "10s", "minRequests": 10, "maxErrorRate": 0.05,
                                 "maxP95LatencyMs": 500}},
    })


@dataclass
class Setup:
    spec: VSSModelSpec
    prometheus: PrometheusServer
    v1: Predictor
    v2: Predictor


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("prometheus-queries")
    v1_path = save(colour_cell_detector("yolov8"), workdir / "v1.onnx")
    v2_path = save(picky_detector(SIDE, matmuls=8, matmul_size=384), workdir / "v2.onnx")
    spec = make_spec(v1_path, v2_path)
    processes: list[subprocess.Popen[bytes]] = []
    with prometheus_server.prometheus_server(workdir / "prometheus") as prometheus:
        try:
            v1 = start_predictor(spec, NAME, "v1", workdir)
            processes.append(v1.process)
            v2 = start_predictor(spec, NAME, "v2", workdir)
            processes.append(v2.process)
            for predictor in (v1, v2):
                prometheus.scrape(predictor.instance, pod=f"{NAME}-{predictor.version}")
            for predictor in (v1, v2):  # discovered and scraped once: tests may count on the next scrape
                prometheus.scraped_after(predictor.instance, 0.0)
            yield Setup(spec, prometheus, v1, v2)
        finally:
            stop(processes)


def buckets(metrics_text: str, version: str) -> dict[float, float]:
    """The predictor's own cumulative `predict` duration buckets for `version`, upper bound → count."""
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "inference_duration_seconds":
            continue
        for s in family.samples:
            if (s.name.endswith("_bucket") and s.labels.get("version") == version
                    and s.labels.get("stage") == "predict"):
                out[float(s.labels["le"])] = s.value
    return out


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative bucket counts (linear within a bucket)."""
    bounds = sorted(cumulative)
    total = cumulative[math.inf]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if bound == math.inf:
                return previous_bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    raise AssertionError("no +Inf bucket")


def delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


async def sample_versions(url: str, windows: dict[str, tuple[float, float]]) -> dict[str, Sample]:
    """Each version over its own window (start, end): from its last scrape before the load to its first
    after, so that increase() extrapolates by a millisecond at most."""
    async with PrometheusClient(endpoints={"default": url}) as client:
        results = await asyncio.gather(*(
            client.sample(VersionQuery("default", NAME, version, end - start + 0.001),
                          datetime.fromtimestamp(end, UTC))
            for version, (start, end) in windows.items()))
    return dict(zip(windows, results, strict=True))


def test_queries_read_each_versions_error_ratio_and_p95(setup: Setup) -> None:
    prometheus, v1, v2 = setup.prometheus, setup.v1, setup.v2
    # Every series exists before the window: a counter's first increment is invisible to increase().
    assert v1.infer(SIDE) == 200 and v2.infer(SIDE) == 200 and v2.infer(SIDE + 32) == 500
    warmed = datetime.now(UTC).timestamp()
    starts = {p.version: prometheus.scraped_after(p.instance, warmed) for p in (v1, v2)}
    before = {p.version: buckets(p.metrics(), p.version) for p in (v1, v2)}

    statuses = {"v1": [v1.infer(SIDE) for _ in range(40)],
                "v2": [v2.infer(SIDE + 32 if i % 4 == 3 else SIDE) for i in range(40)]}
    assert statuses["v1"].count(200) == 40
    assert statuses["v2"].count(200) == 30 and statuses["v2"].count(500) == 10

    after = {p.version: buckets(p.metrics(), p.version) for p in (v1, v2)}
    done = datetime.now(UTC).timestamp()
    ends = {p.version: prometheus.scraped_after(p.instance, done) for p in (v1, v2)}
    windows = {v: (starts[v], ends[v]) for v in ("v1", "v2")} | {"v3": (starts["v1"], ends["v1"])}
    samples = asyncio.run(sample_versions(prometheus.url, windows))

    s1, s2 = samples["v1"], samples["v2"]
    assert isinstance(s1, VersionSample) and isinstance(s2, VersionSample), samples
    assert s1.server_errors == 0 and s1.error_ratio == 0.0
    assert s2.error_ratio == pytest.approx(10 / 40, rel=1e-3)
    for sample in (s1, s2):
        assert sample.requests == pytest.approx(40, rel=1e-3), sample
    for version, sample in (("v1", s1), ("v2", s2)):
        # The extrapolation may scale bucket series by slightly different factors (0.1% here), which
        # moves the rank a little: the answer lies between the process's own 94.5th and 95.5th percentile.
        observed = delta(after[version], before[version])
        low, high = (histogram_quantile(q, observed) * 1000 for q in (0.945, 0.955))
        assert sample.p95_ms is not None and low - 1e-9 <= sample.p95_ms <= high + 1e-9, (version, sample)
    assert isinstance(samples["v3"], NoData) and "no requests to version v3" in samples["v3"].reason

    # The analysis judges them as the rollout would: v1 passes, v2 fails on its errors.
    analysis = setup.spec.rollout.analysis
    assert judge(analysis, s1, datetime.now(UTC)).verdict == "Pass"
    verdict = judge(analysis, s2, datetime.now(UTC))
    assert verdict.verdict == "Fail" and "error rate 25.00% above 5.00%" in verdict.message


def test_the_spec_builds_a_query_that_prometheus_answers_by_version(setup: Setup) -> None:
    assert setup.v2.infer(SIDE) == 200 and setup.v2.infer(SIDE + 32) == 500
    sent = datetime.now(UTC).timestamp()
    scraped = setup.prometheus.scraped_after(setup.v2.instance, sent)
    query = query_for(setup.spec, NAME, "v2")
    assert (query.window_s, query.component, query.model_name) == (10.0, "predictor", NAME)
    served = VersionQuery("default", NAME, "v2", 3600.0)
    sample = asyncio.run(_sample(served, scraped, setup.prometheus.url))
    assert isinstance(sample, VersionSample) and sample.server_errors >= 1 and sample.p95_ms is not None


async def _sample(query: VersionQuery, at: float, url: str) -> Sample:
    async with PrometheusClient(endpoints={"default": url}) as client:
        return await client.sample(query, datetime.fromtimestamp(at, UTC))
