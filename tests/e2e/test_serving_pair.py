"""A predictor and a transformer as the two processes of a pod: the request id and W3C trace context cross the
gRPC hop between them and come back to the client, and SIGTERM stops both cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from tests.e2e.conftest import CLASSIFICATION_YAML, jpeg
from tests.e2e.prometheus_server import wait_until
from tests.e2e.serving_pair import REPO, Pair, Process, port_is_free, serving_pair
from tests.fixtures.onnx_graphs import mean_colour_classifier, save
from vss_api.vssmodel import VSSModel

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TRACESTATE = "vss=t61rcWkgMzE,congo=ucfJifl5GOE"
RED = jpeg(np.broadcast_to(np.array((250, 10, 10), np.uint8), (240, 320, 3)).copy())


def _spec(name: str, model: Path) -> VSSModel:
    return VSSModel.model_validate(yaml.safe_load(CLASSIFICATION_YAML.format(name=name, path=model)))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(mean_colour_classifier(), tmp_path_factory.mktemp("pair") / "colour.onnx")


@pytest.fixture(scope="module")
def pair(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Served once for the tracing tests; the predictor logs at DEBUG, where it writes a line per request."""
    with serving_pair(_spec("traced", model_file).spec, "traced", model_file, tmp_path_factory.mktemp("traced"),
                      predictor_log_level="DEBUG") as served:
        yield served


def _image_input() -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([RED], dtype=object))
    return tensor


def _predictor_saw(pair: Pair, request_id: str) -> dict[str, object]:
    """The predictor's log line for `request_id`, waited for: the log is written as the request is served."""
    def line() -> dict[str, object] | None:
        return next((e for e in pair.predictor.events()
                     if e.get("request_id") == request_id and e.get("message") == "inference done"), None)

    return wait_until(f"predictor log line of {request_id}", line, 10)


def test_the_request_id_sent_over_triton_http_is_the_id_received_and_the_predictor_logs_it(pair: Pair) -> None:
    client = httpclient.InferenceServerClient(pair.transformer.rest_url)
    result = client.infer(pair.name, [_image_input()], request_id="http-req-1",
                          headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    assert result.get_response()["id"] == "http-req-1"
    assert result.as_numpy("labels")[0][0].decode() == "red"
    assert _predictor_saw(pair, "http-req-1")["trace_id"] == TRACE_ID


def test_the_traceparent_comes_back_from_the_predictor_as_rest_response_headers(pair: Pair) -> None:
    """tritonclient.http keeps no response headers, so the same v2 request (binary extension) goes through
    urllib here."""
    element = len(RED).to_bytes(4, "little") + RED
    header = json.dumps({"id": "http-req-2", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                         "parameters": {"binary_data_size": len(element)}}]}).encode()
    request = urllib.request.Request(
        f"http://{pair.transformer.rest_url}/v2/models/{pair.name}/infer", data=header + element, method="POST",
        headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header)),
                 "traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    with urllib.request.urlopen(request, timeout=30) as reply:
        headers, raw = reply.headers, reply.read()
    json_length = headers.get("inference-header-content-length")
    content = json.loads(raw[:int(json_length)] if json_length else raw)
    assert content["id"] == "http-req-2"
    assert headers["traceparent"] == TRACEPARENT and headers["tracestate"] == TRACESTATE
    assert headers["x-request-id"] == "http-req-2"
    assert _predictor_saw(pair, "http-req-2")["trace_id"] == TRACE_ID


def test_grpc_clients_get_their_request_id_back_and_the_traceparent_as_initial_metadata(
        pair: Pair, tmp_path: Path) -> None:
    image = tmp_path / "red.jpg"
    image.write_bytes(RED)
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.triton_grpc_trace_call", pair.transformer.grpc_url, pair.name,
         "grpc-req-1", str(image), f"traceparent={TRACEPARENT}", f"tracestate={TRACESTATE}"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["client_id"] == result["stub_id"] == "grpc-req-1"
    assert result["labels"][0] == "red"
    assert result["initial_metadata"]["traceparent"] == TRACEPARENT
    assert result["initial_metadata"]["tracestate"] == TRACESTATE
    assert result["initial_metadata"]["x-request-id"] == "grpc-req-1"
    assert _predictor_saw(pair, "grpc-req-1")["trace_id"] == TRACE_ID


def test_an_x_request_id_header_names_a_request_that_has_no_v2_id(pair: Pair) -> None:
    client = httpclient.InferenceServerClient(pair.transformer.rest_url)
    result = client.infer(pair.name, [_image_input()], headers={"x-request-id": "from-the-gateway"})
    assert result.get_response()["id"] == "from-the-gateway"
    assert "trace_id" not in _predictor_saw(pair, "from-the-gateway")


def test_a_malformed_traceparent_is_not_passed_on_but_the_request_is_served(pair: Pair) -> None:
    client = httpclient.InferenceServerClient(pair.transformer.rest_url)
    result = client.infer(pair.name, [_image_input()], request_id="bad-trace",
                          headers={"traceparent": "00-not-a-trace-01", "tracestate": TRACESTATE})
    assert result.get_response()["id"] == "bad-trace"
    assert "trace_id" not in _predictor_saw(pair, "bad-trace")


def _stopped(process: Process) -> int | None:
    return process.process.poll()


def test_sigterm_stops_the_predictor_and_the_transformer_with_exit_code_0_and_frees_their_ports(
        model_file: Path, tmp_path: Path) -> None:
    """One request first, so the transformer's channel and the predictor's batch threads exist to be stopped."""
    with serving_pair(_spec("stopped", model_file).spec, "stopped", model_file, tmp_path) as served:
        client = httpclient.InferenceServerClient(served.transformer.rest_url)
        assert client.infer(served.name, [_image_input()]).as_numpy("labels")[0][0].decode() == "red"
        for process in (served.transformer, served.predictor):  # the order `vss run` stops them in
            process.process.send_signal(signal.SIGTERM)
            code = wait_until(f"{process.role} exit after SIGTERM", lambda p=process: _stopped(p), 25, every_s=0.1)
            output = process.output()
            assert code == 0, output[-3000:]
            assert any(e.get("message") == "model stopped" for e in process.events()), output[-3000:]
            assert "Traceback" not in output, output[-3000:]
            for port in (process.http_port, process.grpc_port):
                assert wait_until(f"{process.role} port {port} free", lambda p=port: port_is_free(p) or None, 5)


def test_a_pair_told_the_largest_request_size_the_crd_allows_starts_and_serves(
        model_file: Path, tmp_path: Path) -> None:
    """transformer.maxRequestBytes 1 GiB: the gRPC limits it gives both processes must fit gRPC's C int, or the
    transformer's channel and the predictor's server fail at start."""
    model = _spec("largest", model_file)
    model.spec.transformer.max_request_bytes = 1 << 30
    with serving_pair(model.spec, "largest", model_file, tmp_path) as served:
        client = httpclient.InferenceServerClient(served.transformer.rest_url)
        assert client.infer(served.name, [_image_input()]).as_numpy("labels")[0][0].decode() == "red"
        for process in (served.predictor, served.transformer):
            assert "Traceback" not in process.output(), process.output()[-3000:]
