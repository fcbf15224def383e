"""Faults in the data plane with real processes under steady load from several client threads: the predictor
SIGKILLed and restarted (as a kubelet restarts a container), the transformer SIGKILLed and restarted, and the
transformer stopped with SIGTERM. The assertions are on how each call ended; how long each took is printed
(`pytest -s`), never asserted."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.e2e.conftest import CLASSIFICATION_YAML, jpeg
from tests.e2e.prometheus_server import wait_until
from tests.e2e.steady_load import (
    CONNECTION,
    OK,
    UNAVAILABLE,
    Call,
    GrpcClient,
    RestClient,
    SteadyLoad,
    outcomes,
)
from tests.e2e.supervised_pair import SupervisedPair, supervised_pair, unread_bytes_on
from tests.fixtures.onnx_graphs import mean_colour_classifier, save
from vss_api.vssmodel import VSSModel

RED = jpeg(np.broadcast_to(np.array((250, 10, 10), np.uint8), (240, 320, 3)).copy())
REST_CLIENTS, GRPC_CLIENTS = 3, 2


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(mean_colour_classifier(), tmp_path_factory.mktemp("chaos") / "colour.onnx")


@pytest.fixture
def pair(model_file: Path, tmp_path: Path) -> Iterator[SupervisedPair]:
    spec = VSSModel.model_validate(yaml.safe_load(CLASSIFICATION_YAML.format(name="chaos", path=model_file))).spec
    served = supervised_pair(spec, "chaos", model_file, tmp_path)
    try:
        yield served
    finally:
        served.stop()


def _load(pair: SupervisedPair) -> SteadyLoad:
    t = pair.transformer
    return SteadyLoad([("rest", RestClient(t.rest_url, pair.name, RED, "red")) for _ in range(REST_CLIENTS)]
                      + [("grpc", GrpcClient(t.grpc_url, pair.name, RED, "red")) for _ in range(GRPC_CLIENTS)])


def _oks(calls: list[Call], after: float = 0.0) -> int:
    return sum(1 for c in calls if c.outcome == OK and c.started > after)


def _between(calls: list[Call], start: float, end: float) -> list[Call]:
    """The calls that started after `start` and ended before `end`."""
    return [c for c in calls if c.started > start and c.ended < end]


def _first_ok_after(load: SteadyLoad, moment: float, deadline_s: float = 60.0) -> float:
    calls = load.wait_for("an answer after the restart", lambda cs: _oks(cs, moment) > 0, deadline_s)
    return min(c.ended for c in calls if c.outcome == OK and c.started > moment)


def _print_in_flight(what: str, calls: list[Call], moment: float) -> None:
    print(f"\n{what}: {len(calls)} in flight")
    for call in sorted(calls, key=lambda c: c.started):
        print(f"  {call.protocol:4s} started {call.started - moment:+.3f}s  ended {call.ended - moment:+.3f}s  "
              f"took {call.seconds:.3f}s  {call.outcome}  {call.detail[:80]}")


def test_a_killed_predictor_gives_503_fast_and_the_same_transformer_serves_again_once_it_is_restarted(
        pair: SupervisedPair) -> None:
    load = _load(pair).start()
    try:
        load.wait_for("answers before the kill", lambda cs: _oks(cs) >= 20)
        killed_at = time.monotonic()
        pair.predictor.kill()
        dead_at = time.monotonic()
        load.wait_for("calls while the predictor is down", lambda cs: len(_between(cs, dead_at, 1e18)) >= 20)
        restarted_at = time.monotonic()
        pair.predictor.start()
        ready_at = time.monotonic()
        recovered_at = _first_ok_after(load, ready_at)
        load.wait_for("calls after the recovery", lambda cs: len(_between(cs, recovered_at, 1e18)) >= 40)
    finally:
        calls = load.stop()
    in_flight = [c for c in calls if c.in_flight_at(killed_at) or c.in_flight_at(dead_at)]
    while_down = _between(calls, dead_at, restarted_at)
    _print_in_flight("predictor SIGKILL", in_flight, killed_at)
    print(f"  while down: {outcomes(while_down)}, slowest {max(c.seconds for c in while_down):.3f}s; first answer "
          f"{recovered_at - ready_at:.3f}s after the new predictor was ready; all calls: {outcomes(calls)}")
    assert in_flight, "no call was in flight at the kill: the load is not steady"
    # A call whose answer had left the predictor before it died is served; every other one is a 503.
    assert set(outcomes(in_flight)) <= {OK, UNAVAILABLE}, in_flight
    assert UNAVAILABLE in outcomes(in_flight), in_flight
    assert while_down and set(outcomes(while_down)) == {UNAVAILABLE}, outcomes(while_down)
    after_recovery = [c for c in calls if c.started > recovered_at]
    assert after_recovery and set(outcomes(after_recovery)) == {OK}, outcomes(after_recovery)
    assert set(outcomes(calls)) <= {OK, UNAVAILABLE}, outcomes(calls)
    assert pair.transformer.starts == 1 and pair.transformer.running.poll() is None
    assert "Traceback" not in pair.transformer.output(), pair.transformer.output()[-3000:]


def _predictor_server_errors(pair: SupervisedPair) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", pair.predictor.http_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("inference_requests_total{") and 'status="server_error"' in line)


def test_a_killed_transformer_costs_clients_connection_errors_only_until_it_is_restarted(
        pair: SupervisedPair) -> None:
    load = _load(pair).start()
    try:
        load.wait_for("answers before the kill", lambda cs: _oks(cs) >= 20)
        killed_at = time.monotonic()
        pair.transformer.kill()
        dead_at = time.monotonic()
        load.wait_for("calls while the transformer is down", lambda cs: len(_between(cs, dead_at, 1e18)) >= 20)
        restarted_at = time.monotonic()
        pair.transformer.start()
        ready_at = time.monotonic()
        every_client = len(load.clients)
        load.wait_for("every client answered again",
                      lambda cs: len({c.client for c in cs if c.outcome == OK and c.started > ready_at})
                      == every_client)
        recovered_at = _first_ok_after(load, ready_at)
        all_back_at = time.monotonic()
        load.wait_for("calls after the recovery", lambda cs: len(_between(cs, all_back_at, 1e18)) >= 40)
    finally:
        calls = load.stop()
    in_flight = [c for c in calls if c.in_flight_at(killed_at) or c.in_flight_at(dead_at)]
    _print_in_flight("transformer SIGKILL", in_flight, killed_at)
    print(f"  first answer {recovered_at - ready_at:.3f}s after the new transformer was ready; "
          f"all calls: {outcomes(calls)}")
    assert set(outcomes([c for c in calls if c.ended < killed_at])) == {OK}
    assert set(outcomes(in_flight)) <= {OK, CONNECTION}, in_flight
    assert set(outcomes(_between(calls, dead_at, restarted_at))) == {CONNECTION}
    # Each client, once answered again, is answered every time (a gRPC channel may reconnect a moment later
    # than a REST client, so recovery is per client).
    for client in {c.client for c in calls}:
        own = [c for c in calls if c.client == client]
        back_at = min(c.started for c in own if c.outcome == OK and c.started > ready_at)
        assert set(outcomes([c for c in own if c.started >= back_at])) == {OK}, client
    assert set(outcomes(calls)) <= {OK, CONNECTION}, outcomes(calls)
    # The predictor never noticed: the same process, no failed request.
    assert pair.predictor.starts == 1 and pair.predictor.running.poll() is None
    assert _predictor_server_errors(pair) == 0


def _refused(port: int) -> bool | None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return None


def test_sigterm_lets_the_transformer_finish_the_requests_in_flight_refuse_new_ones_and_exit(
        pair: SupervisedPair) -> None:
    """The predictor is SIGSTOPped so that the requests stay in flight until the test lets them finish; each is
    known to be in the transformer once the kernel holds none of its bytes unread."""
    t = pair.transformer
    element = struct.pack("<I", len(RED)) + RED
    header = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(element)}}]}).encode()
    warm = RestClient(t.rest_url, pair.name, RED, "red")  # the channel to the predictor is up, as under load
    assert warm.send() == (OK, "")
    warm.close()
    pair.predictor.signal(signal.SIGSTOP)
    try:
        connections = [http.client.HTTPConnection("127.0.0.1", t.http_port, timeout=60) for _ in range(4)]
        for conn in connections:  # request() returns once every byte is written to the socket
            conn.request("POST", f"/v2/models/{pair.name}/infer", body=header + element,
                         headers={"Content-Type": "application/octet-stream",
                                  "Inference-Header-Content-Length": str(len(header))})
        wait_until("the transformer has read the requests",
                   lambda: (lambda q: len(q) >= 4 and not any(q))(unread_bytes_on(t.http_port)) or None, 30)
        replies: dict[int, tuple[int, bytes]] = {}

        def answer(index: int, conn: http.client.HTTPConnection) -> None:
            reply = conn.getresponse()
            replies[index] = (reply.status, reply.read())

        readers = [threading.Thread(target=answer, args=(i, c), daemon=True) for i, c in enumerate(connections)]
        for reader in readers:
            reader.start()
        t.signal(signal.SIGTERM)
        wait_until("the transformer refuses new connections", lambda: _refused(t.http_port), 30)
        assert not replies, "the requests in flight were answered while the predictor was stopped"
        assert t.running.poll() is None, "the transformer exited with requests in flight"
    finally:
        pair.predictor.signal(signal.SIGCONT)
    for reader in readers:
        reader.join(timeout=60)
    assert sorted(replies) == [0, 1, 2, 3]
    for status, body in replies.values():
        assert status == 200, body[:300]
        assert next(o for o in json.loads(body)["outputs"] if o["name"] == "labels")["data"][0] == "red"
    code = wait_until("the transformer exits", lambda: t.running.poll(), 40, every_s=0.1)
    assert code == 0, t.output()[-3000:]
    assert "Traceback" not in t.output(), t.output()[-3000:]
    after_exit = GrpcClient(t.grpc_url, pair.name, RED, "red")
    assert after_exit.send()[0] == CONNECTION  # and gRPC has stopped too
    after_exit.close()
