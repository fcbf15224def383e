"""Four times its capacity offered to a served model (issue 15): every request is answered 200, 503 with
`Retry-After` (refused before any work: the transformer's `maxConcurrency`, the predictor's `maxQueueSize`) or 504
(its deadline passed), over REST and gRPC alike; nothing gets a 500 or hangs, and the model serves the next request
as soon as the storm is over. Real `vss run` processes and real clients; the offered rate is a multiple of the
capacity measured in the same test, so a slow machine offers less but is overloaded all the same. The figures
(statuses, latencies, memory) come from `benchmarks/overload.py`, which these tests drive in a smaller size."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from benchmarks.frames import jpeg_frames
from benchmarks.loadgen import TargetSpec
from benchmarks.overload import ANSWERS, Client, Outcome, closed_loop, open_loop, recovery
from tests.e2e.serving import Served, vss_run
from tests.fixtures.onnx_graphs import mean_colour_classifier, save

# Small limits so that four times the capacity overflows them at once, wherever the capacity lies.
TIGHT_YAML = """\
apiVersion: serving.vss.ai/v1alpha1
kind: VSSModel
metadata: {{name: tight}}
spec:
  task: classification
  version: v1
  versions: [{{name: v1, storageUri: {path}}}]
  predictor: {{batching: {{maxBatchSize: 4, maxLatencyMs: 2, maxQueueSize: 4}}}}
  transformer:
    maxConcurrency: 8
    classification: {{topK: 3}}
"""


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("overload")
    model = save(mean_colour_classifier(), workdir / "colour.onnx")
    spec = workdir / "tight.yaml"
    spec.write_text(TIGHT_YAML.format(path=model))
    with vss_run(spec, "tight", workdir) as served:
        yield served


async def storm_and_after(target: TargetSpec, timeout_us: int | None) -> tuple[list[Outcome], list[Outcome]]:
    """Capacity measured closed-loop, four times it offered open-loop for 5 s, then sequential requests."""
    async with Client(target, jpeg_frames(4)) as client:
        rate, failed = await closed_loop(client, concurrency=4, seconds=3.0)
        assert failed == 0 and rate > 0, (rate, failed)
        outcomes = await open_loop(client, rate=4 * rate, seconds=5.0, timeout_us=timeout_us)
        return outcomes, await recovery(client, requests=8)


def target_of(served: Served, protocol: str) -> TargetSpec:
    return TargetSpec(protocol, served.rest_url if protocol == "rest" else served.grpc_url, served.name, ("labels",))


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_four_times_capacity_gets_only_answers_refusals_with_retry_after_and_the_next_request_is_served(
        tight: Served, protocol: str) -> None:
    outcomes, after = asyncio.run(storm_and_after(target_of(tight, protocol), timeout_us=None))
    seen = {o.status for o in outcomes}
    allowed = ANSWERS[protocol]
    assert seen <= allowed, {(o.status, o.detail) for o in outcomes if o.status not in allowed}
    refused = [o for o in outcomes if o.status in ("503", "UNAVAILABLE")]
    assert refused, f"four times the capacity was never refused: {seen}"
    assert any(o.status in ("200", "OK") for o in outcomes), seen
    if protocol == "rest":
        assert all(o.retry_after for o in refused), "a 503 without Retry-After"
    assert {o.status for o in after} == {"200" if protocol == "rest" else "OK"}, [o.status for o in after]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_requests_whose_deadline_passes_in_the_storm_get_504_or_deadline_exceeded_not_a_late_answer(
        tight: Served, protocol: str) -> None:
    # 2 ms: a request that waits in a queue outlives it
    outcomes, after = asyncio.run(storm_and_after(target_of(tight, protocol), timeout_us=2_000))
    seen = {o.status for o in outcomes}
    allowed = ANSWERS[protocol]
    assert seen <= allowed, {(o.status, o.detail) for o in outcomes if o.status not in allowed}
    assert {"504", "DEADLINE_EXCEEDED"} & seen, f"no request's 2 ms deadline passed in the storm: {seen}"
    assert {o.status for o in after} == {"200" if protocol == "rest" else "OK"}, [o.status for o in after]

