"""Health probes answer while large requests are parsed, against a real `vss run` of the shipped anomaly model:
the transformer checks a v1 series number by number, which done on the event loop held up every probe behind
it (the probes the operator renders time out after 2 s; three missed and the pod leaves its Service). Six
requests of the largest batch at once held the probes 6.3 s before (JSON parsed on the loop, and the garbage
collector scanning the parsed lists); now 0.8-1.0 s at worst."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.e2e.serving import REPO, Served, post, vss_run

PROBE_TIMEOUT_S = 2.0  # the timeoutSeconds of the probes the operator renders (vss_operator.render)
FAILURE_THRESHOLD = 3  # their failureThreshold: the kubelet acts only on this many failures in a row
STALL_BEFORE_S = 6.3  # the stall with the parsing on the event loop, which this test caught
LARGE_REQUESTS = 6  # at once, each 4,096 windows of 100 x 5 readings (~17 MB of JSON, ~0.4 s to check here)


@pytest.fixture(scope="module")
def anomaly_4096(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The shipped anomaly example with its batch limit raised to the most the CRD allows."""
    workdir = tmp_path_factory.mktemp("health-under-load")
    doc = yaml.safe_load((REPO / "examples" / "anomaly.yaml").read_text())
    doc["spec"]["transformer"]["anomaly"]["maxBatch"] = 4096
    doc["spec"]["transformer"]["maxRequestBytes"] = 64 * 1024 * 1024
    # Six of the largest batches queue for the model one after another (2-3 s each here); on this shared machine
    # the one process `vss run` serves a CPU model with gets one autogroup session's share of the cores, where the
    # two-process layout got two, and the last ones passed the example's 10 s predictor timeout (504). The test is
    # about the probes: the requests get the time they need.
    doc["spec"]["transformer"]["predictorTimeoutSeconds"] = 60
    path = Path(workdir) / "anomaly-4096.yaml"
    path.write_text(yaml.safe_dump(doc))
    with vss_run(path, doc["metadata"]["name"], workdir) as served:
        yield served


def _probe(url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.status == 200
    return time.monotonic() - started


def test_health_probes_answer_within_their_timeout_while_large_v1_series_are_parsed(anomaly_4096: Served) -> None:
    features = ["temperature", "humidity", "pressure", "vibration", "power"]
    rng = np.random.default_rng(3)
    body = json.dumps({"instances": [{"values": rng.random((100, 5)).round(4).tolist(), "features": features}
                                     for _ in range(4096)]}).encode()
    url = f"http://{anomaly_4096.rest_url}"
    done = threading.Event()
    with ThreadPoolExecutor(LARGE_REQUESTS) as pool:
        large = [pool.submit(post, f"{url}/v1/models/{anomaly_4096.name}:predict", body)
                 for _ in range(LARGE_REQUESTS)]
        pool_done = threading.Thread(target=lambda: ([f.result() for f in large], done.set()), daemon=True)
        pool_done.start()
        probes: list[float] = []
        while not done.is_set():  # probe for as long as the large requests are in flight
            probes.append(_probe(f"{url}/v2/health/ready"))
        answers = [f.result() for f in large]
    assert all(status == 200 for status, _ in answers), [(s, b[:200]) for s, b in answers if s != 200]
    assert len(json.loads(answers[0][1])["predictions"]) == 4096
    assert len(probes) >= 3, f"only {len(probes)} probes while the large requests ran"
    # What a kubelet would do: mark the pod unready after FAILURE_THRESHOLD probes in a row over the timeout. One
    # probe past it on a loaded 2-core machine (2.13 s once, in the full suite) is not that; the 6.3 s stall was.
    over = [seconds > PROBE_TIMEOUT_S for seconds in probes]
    in_a_row = max((sum(over[i:i + FAILURE_THRESHOLD]) for i in range(len(over))), default=0)
    assert in_a_row < FAILURE_THRESHOLD, f"{in_a_row} probes in a row over {PROBE_TIMEOUT_S}s: {probes}"
    assert max(probes) < STALL_BEFORE_S / 2, f"slowest probe {max(probes):.2f}s of {len(probes)}: {probes}"
    assert _probe(f"{url}/v2/health/ready") < PROBE_TIMEOUT_S
