"""The result cache (`transformer.cache`) with a real redis-server, real predictor and transformer processes and
real clients: a repeated frame is answered from Redis without the predictor, another setting or another set of
outputs is a miss, answers expire with their TTL, oversized ones are not stored, and with Redis SIGKILLed in the
middle of a load every request still succeeds, the errors are counted, and hits come back once it is restarted."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import CLASSIFICATION_YAML, jpeg
from tests.e2e.prometheus_server import wait_until
from tests.e2e.redis_server import RedisServer, redis_server
from tests.e2e.serving_pair import REPO, Pair, serving_pair
from tests.fixtures.onnx_graphs import mean_colour_classifier, save
from vss_api.serving_flags import CACHE_URL_ENV
from vss_api.vssmodel import VSSModel

NAME = "cached"


def _spec(model: Path, *, top_k: int, cache: dict[str, object]) -> VSSModel:
    body = yaml.safe_load(CLASSIFICATION_YAML.format(name=NAME, path=model))
    body["spec"]["transformer"]["classification"]["topK"] = top_k
    body["spec"]["transformer"]["cache"] = {"secretRef": {"name": "redis"}, **cache}
    return VSSModel.model_validate(body)


def frame(seed: int) -> bytes:
    """A small JPEG no other test sends: each seed its own noise."""
    return jpeg(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(mean_colour_classifier(), tmp_path_factory.mktemp("cache-model") / "colour.onnx")


@pytest.fixture(scope="module")
def pair(redis: RedisServer, model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Top 3, an hour's TTL, the default entry size."""
    spec = _spec(model_file, top_k=3, cache={"ttlSeconds": 3600, "timeoutMs": 50}).spec
    with serving_pair(spec, NAME, model_file, tmp_path_factory.mktemp("cached"),
                      env={CACHE_URL_ENV: redis.url}) as served:
        yield served


@pytest.fixture(scope="module")
def short(redis: RedisServer, model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """The same model and version in front of the same Redis, with other settings (top 2), a TTL of one second
    and room for the answer to one image but not to eight."""
    spec = _spec(model_file, top_k=2, cache={"ttlSeconds": 1, "maxEntryBytes": 400}).spec
    with serving_pair(spec, NAME, model_file, tmp_path_factory.mktemp("short"),
                      env={CACHE_URL_ENV: redis.url}) as served:
        yield served


# --- reading what the processes export ----------------------------------------------------------------------------

def metric(rest_url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    with urllib.request.urlopen(f"http://{rest_url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@dataclass(frozen=True)
class Counts:
    hits: float
    misses: float
    stores: float
    too_large: float
    errors: float
    predictor_calls: float

    @classmethod
    def of(cls, pair: Pair) -> Counts:
        t = pair.transformer.rest_url
        return cls(hits=metric(t, "result_cache_hits_total"), misses=metric(t, "result_cache_misses_total"),
                   stores=metric(t, "result_cache_stores_total"), too_large=metric(t, "result_cache_too_large_total"),
                   errors=metric(t, "result_cache_errors_total"),
                   predictor_calls=metric(pair.predictor.rest_url, "inference_requests_total", status="success"))


def _input(*images: bytes) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(list(images), dtype=object))
    return tensor


def classify(pair: Pair, *images: bytes, outputs: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(pair.transformer.rest_url)
    asked = [httpclient.InferRequestedOutput(n) for n in outputs] or None
    result = client.infer(pair.name, [_input(*images)], outputs=asked)
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def stored(pair: Pair, before: Counts, count: int = 1) -> Counts:
    """Stores run after the answer went out: wait for them."""
    return wait_until("the answer stored", lambda: (c if (c := Counts.of(pair)).stores >= before.stores + count
                                                    else None), 10)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tolist() == b[name].tolist(), name


# --- the tests ----------------------------------------------------------------------------------------------------

def test_a_repeated_frame_is_answered_from_redis_without_calling_the_predictor(pair: Pair, tmp_path: Path) -> None:
    image = frame(1)
    start = Counts.of(pair)
    first = classify(pair, image)
    after_first = stored(pair, start)
    assert (after_first.misses, after_first.hits) == (start.misses + 1, start.hits)
    assert after_first.predictor_calls == start.predictor_calls + 1

    second = classify(pair, image)
    # Binary tensors over gRPC from the same entry, with tritonclient.grpc in a child process (its protobuf
    # symbols clash with kserve's, which this process imports).
    (tmp_path / "frame.jpg").write_bytes(image)
    out = subprocess.run([sys.executable, "-m", "tests.e2e.triton_grpc_call", pair.transformer.grpc_url, pair.name,
                          "image", str(tmp_path / "frame.jpg")], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True)
    third = json.loads(out.stdout)

    end = Counts.of(pair)
    assert end.hits == start.hits + 2
    assert end.predictor_calls == after_first.predictor_calls  # the predictor saw neither repeat
    _same(first, second)
    assert third["labels"] == [[v.decode() for v in row] for row in first["labels"]]
    assert (third["scores"], third["class_ids"]) == (first["scores"].tolist(), first["class_ids"].tolist())
    assert first["labels"].shape == (1, 3)


def test_a_cached_answer_goes_out_as_json_tensors_when_asked_and_says_it_was_a_hit(pair: Pair) -> None:
    image = frame(2)
    body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "data": [base64.b64encode(image).decode()]}]}).encode()

    def ask() -> tuple[str | None, dict[str, object]]:
        request = urllib.request.Request(f"http://{pair.transformer.rest_url}/v2/models/{pair.name}/infer",
                                         data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.headers.get("x-vss-cache"), json.loads(reply.read())

    header, answer = ask()  # JSON BYTES are another request than binary ones: a miss, then a hit
    wait_until("the JSON request's answer stored", lambda: ask()[0] == "hit" or None, 10)
    header_again, answer_again = ask()
    assert (header, header_again) == ("miss", "hit")
    assert answer_again["outputs"] == answer["outputs"]
    assert answer_again["model_version"] == "v1"


def test_the_same_frame_under_other_settings_or_other_requested_outputs_is_a_miss(pair: Pair, short: Pair) -> None:
    image = frame(3)
    counts = Counts.of(pair)
    classify(pair, image)
    stored(pair, counts)
    before = Counts.of(short)
    answer = classify(short, image)  # the same model and version and Redis, but top 2: not pair's answer
    assert Counts.of(short).misses == before.misses + 1 and Counts.of(short).hits == before.hits
    assert answer["labels"].shape == (1, 2)

    before = Counts.of(pair)
    only_labels = classify(pair, image, outputs=("labels",))
    assert Counts.of(pair).misses == before.misses + 1
    assert list(only_labels) == ["labels"]


def test_an_answer_expires_with_the_ttl(short: Pair, redis: RedisServer) -> None:
    client = redis.client()
    keys_before = set(client.keys("vss:result:*"))
    image = frame(4)
    before = Counts.of(short)
    classify(short, image)
    stored(short, before)
    (key,) = set(client.keys("vss:result:*")) - keys_before
    assert 0 < client.pttl(key) <= 1000

    wait_until("the entry expired", lambda: True if client.exists(key) == 0 else None, 10, every_s=0.05)
    again = Counts.of(short)
    classify(short, image)
    assert Counts.of(short).misses == again.misses + 1
    assert Counts.of(short).hits == again.hits


def test_an_answer_larger_than_max_entry_bytes_is_served_and_never_stored(short: Pair) -> None:
    images = [frame(10 + i) for i in range(8)]
    before = Counts.of(short)
    answer = classify(short, *images)
    assert answer["labels"].shape == (8, 2)
    after = wait_until("counted as too large",
                       lambda: c if (c := Counts.of(short)).too_large == before.too_large + 1 else None, 10)
    classify(short, *images)
    end = Counts.of(short)
    assert end.stores == after.stores == before.stores
    assert end.misses == before.misses + 2 and end.hits == before.hits


def test_no_request_fails_while_redis_is_killed_mid_load_and_hits_resume_once_it_is_back(
        pair: Pair, redis: RedisServer) -> None:
    frames = [frame(100 + i) for i in range(6)]
    for image in frames:  # cached before the load starts
        classify(pair, image)
    stop = threading.Event()
    served, failures = [0], []
    lock = threading.Lock()

    def load(worker: int) -> None:
        client = httpclient.InferenceServerClient(pair.transformer.rest_url, network_timeout=20)
        i = worker
        while not stop.is_set():
            try:
                result = client.infer(pair.name, [_input(frames[i % len(frames)])])
                assert result.as_numpy("labels").shape == (1, 3)
                with lock:
                    served[0] += 1
            except Exception as exc:  # every failure is kept for the assertion below
                failures.append(exc)
            i += 1

    def served_at_least(n: int) -> bool | None:
        if failures:
            raise AssertionError(f"requests failed: {failures[:3]}")
        return True if served[0] >= n else None

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load, w) for w in range(4)]
        try:
            start = Counts.of(pair)
            wait_until("hits under load", lambda: True if Counts.of(pair).hits >= start.hits + 20 else None, 30)
            redis.kill()
            killed_at = served[0]
            wait_until("the failure counted",
                       lambda: True if Counts.of(pair).errors > start.errors else None, 20)
            wait_until("requests served with Redis dead", lambda: served_at_least(killed_at + 100), 60)
            during = Counts.of(pair)
            redis.start()  # empty: nothing was persisted
            wait_until("hits again after the restart",
                       lambda: True if Counts.of(pair).hits >= during.hits + 20 else None, 40)
            resumed_at = served[0]
            wait_until("requests served after the restart", lambda: served_at_least(resumed_at + 50), 60)
        finally:
            stop.set()
            for worker in workers:
                worker.result()
    end = Counts.of(pair)
    assert not failures
    assert end.errors > start.errors
    print(f"served {served[0]} requests, none failed; cache errors {end.errors - start.errors:.0f}, "
          f"hits {end.hits - start.hits:.0f}, misses {end.misses - start.misses:.0f}, "
          f"predictor calls {end.predictor_calls - start.predictor_calls:.0f}")
