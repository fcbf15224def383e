"""Memory under sustained load: thousands of requests through a real predictor and transformer, over v2 REST and
v2 gRPC, and each process's resident memory after them against its memory after a warm-up. A leak of even a few
kilobytes a request (a kept request, response, tensor or trace entry) grows it by more than the tolerance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.e2e.conftest import CLASSIFICATION_YAML, jpeg
from tests.e2e.steady_load import OK, GrpcClient, RestClient, SteadyLoad, outcomes
from tests.e2e.supervised_pair import SupervisedPair, supervised_pair
from tests.fixtures.onnx_graphs import mean_colour_classifier, save
from vss_api.vssmodel import VSSModel

RED = jpeg(np.broadcast_to(np.array((250, 10, 10), np.uint8), (240, 320, 3)).copy())
WARM_UP, MEASURED = 1_000, 6_000
# Allocator arenas and caches settle within the warm-up; what is left of the noise is a few MB. 12 MB over
# 6000 requests is 2 kB a request: a leaked input (the 150 kB pixel tensor) or output would be far above it.
TOLERANCE_KB = 12 * 1024


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[SupervisedPair]:
    model_file = save(mean_colour_classifier(), tmp_path / "colour.onnx")
    spec = VSSModel.model_validate(yaml.safe_load(CLASSIFICATION_YAML.format(name="steady", path=model_file))).spec
    served = supervised_pair(spec, "steady", model_file, tmp_path)
    try:
        yield served
    finally:
        served.stop()


def _serve(pair: SupervisedPair, requests: int) -> dict[str, int]:
    """`requests` calls or a few more from 2 REST and 2 gRPC clients; how they ended."""
    t = pair.transformer
    load = SteadyLoad([("rest", RestClient(t.rest_url, pair.name, RED, "red")) for _ in range(2)]
                      + [("grpc", GrpcClient(t.grpc_url, pair.name, RED, "red")) for _ in range(2)]).start()
    try:
        load.wait_for(f"{requests} calls", lambda calls: len(calls) >= requests, deadline_s=240)
    finally:
        calls = load.stop()
    return outcomes(calls)


def test_neither_process_grows_its_memory_over_thousands_of_requests_after_a_warm_up(pair: SupervisedPair) -> None:
    assert set(_serve(pair, WARM_UP)) == {OK}
    warm = {"predictor": pair.predictor.rss_kb(), "transformer": pair.transformer.rss_kb()}
    served = _serve(pair, MEASURED)
    after = {"predictor": pair.predictor.rss_kb(), "transformer": pair.transformer.rss_kb()}
    print(f"\nRSS after {WARM_UP} warm-up requests {warm} kB, after {sum(served.values())} more {after} kB")
    assert set(served) == {OK}, served
    for role in warm:
        assert after[role] - warm[role] < TOLERANCE_KB, (role, warm[role], after[role])
