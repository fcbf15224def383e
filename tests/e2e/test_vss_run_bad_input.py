"""Bad input against real `vss run` processes: every caller mistake is a 4xx (or gRPC INVALID_ARGUMENT)
that says what was wrong, never a 500 or a hang, and the server answers a good request right after."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import jpeg, scene
from tests.e2e.serving import REPO, Served, post

GOOD = jpeg(scene())


def _binary(inputs: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, dict[str, str]]:
    header = {"inputs": [{"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
                         for n, d, s, b in inputs]}
    head = json.dumps(header).encode()
    return head + b"".join(b for *_, b in inputs), {"Inference-Header-Content-Length": str(len(head)),
                                                     "Content-Type": "application/octet-stream"}


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def _image_request(*items: bytes) -> tuple[bytes, dict[str, str]]:
    return _binary([("image", "BYTES", [len(items)], _bytes_tensor(*items))])


CASES = {
    "not an image": (_image_request(b"this is plain text, not a picture"), 400, "not a JPEG or PNG"),
    "truncated jpeg": (_image_request(GOOD[: len(GOOD) // 3]), 400, "JPEG"),
    "pixels of the wrong dtype": (_binary([("pixels", "FP32", [4, 4, 3], b"\0" * 192)]), 400, "must be UINT8"),
    "pixels of the wrong shape": (_binary([("pixels", "UINT8", [4, 4], b"\0" * 16)]), 400, "[H, W, 3]"),
    "empty batch": (_binary([("image", "BYTES", [0], b"")]), 400, "empty"),
    "unknown input name": (_binary([("frames", "BYTES", [1], _bytes_tensor(GOOD))]), 400, "exactly one input"),
    "both inputs": (_binary([("image", "BYTES", [1], _bytes_tensor(GOOD)),
                             ("pixels", "UINT8", [1, 1, 3], b"\0\0\0")]), 400, "exactly one input"),
    "binary size past the body": ((b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],'
                                   b'"parameters":{"binary_data_size":999}}]}', {}), 400, "binary_data_size"),
    "not json": ((b"{this is not json", {}), 400, "not valid JSON"),
    "second image broken": (_image_request(GOOD, b"garbage"), 400, "image[1]"),
    "pixels as json outside 0..255": ((json.dumps({"inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 3], "data": [300, -5, 7]}]}).encode(), {}),
        400, "outside 0..255"),
}


def _good_request_succeeds(served: Served) -> None:
    body, headers = _image_request(GOOD)
    status, reply = post(f"http://{served.rest_url}/v2/models/{served.name}/infer", body, headers)
    assert status == 200, reply


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_request_gets_a_4xx_that_says_why_and_the_next_good_one_succeeds(detector: Served, case: str) -> None:
    (body, headers), expected, message = CASES[case]
    status, reply = post(f"http://{detector.rest_url}/v2/models/{detector.name}/infer", body, headers)
    assert status == expected, reply
    assert message in json.loads(reply)["error"]
    _good_request_succeeds(detector)


def test_a_bad_request_leaves_the_keep_alive_connection_serving_the_next_one(detector: Served) -> None:
    """A client's persistent connection survives a caller mistake (it was dropped after a 500)."""
    host, port = detector.rest_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    path = f"/v2/models/{detector.name}/infer"
    try:
        for body, headers, expected in [(*CASES["pixels as json outside 0..255"][0], 400), (*_image_request(GOOD), 200),
                                        (*CASES["not an image"][0], 400), (*_image_request(GOOD), 200)]:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
            reply = connection.getresponse()
            reply.read()
            assert reply.status == expected
            assert reply.getheader("connection", "").lower() != "close"
    finally:
        connection.close()


def test_an_unknown_model_is_404(detector: Served) -> None:
    body, headers = _image_request(GOOD)
    status, reply = post(f"http://{detector.rest_url}/v2/models/no-such-model/infer", body, headers)
    assert status == 404, reply
    _good_request_succeeds(detector)


def test_a_body_over_the_configured_limit_is_413(detector: Served) -> None:
    body, headers = _image_request(b"\xff\xd8" + b"\0" * 4_500_000)
    status, reply = post(f"http://{detector.rest_url}/v2/models/{detector.name}/infer", body, headers)
    assert status == 413, reply
    assert "limit of 4000000 bytes" in json.loads(reply)["error"]
    _good_request_succeeds(detector)


def test_a_v1_request_without_instances_is_400(detector: Served) -> None:
    status, reply = post(f"http://{detector.rest_url}/v1/models/{detector.name}:predict", b'{"inputs": 3}')
    assert status == 400 and "instances" in json.loads(reply)["error"]
    _good_request_succeeds(detector)


def test_bad_input_over_grpc_is_invalid_argument_with_the_reason(detector: Served, workdir: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.e2e.triton_grpc_call", detector.grpc_url, detector.name,
                          "pixels-float"], capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "must be UINT8" in result["error"]
    _good_request_succeeds(detector)


def _with_parameters(parameters: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    """A good image request that also carries request-level `parameters`."""
    data = _bytes_tensor(GOOD)
    head = json.dumps({"parameters": parameters, "inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(data)}}]}).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def test_a_threshold_sent_per_request_is_400_naming_it_and_the_next_request_on_the_connection_succeeds(
        detector: Served) -> None:
    host, port = detector.rest_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    path = f"/v2/models/{detector.name}/infer"
    try:
        connection.request("POST", path, *_with_parameters({"confidenceThreshold": "abc"}))
        reply = connection.getresponse()
        error = json.loads(reply.read())["error"]
        assert reply.status == 400, error
        assert error.startswith("request parameter 'confidenceThreshold' ('abc') is not one this server takes: ")
        assert "spec.transformer.detection.confidenceThreshold (0.5 for this model)" in error
        connection.request("POST", path, *_image_request(GOOD))
        reply = connection.getresponse()
        body = reply.read()
        assert reply.status == 200, body
        assert b"num_detections" in body
    finally:
        connection.close()


def test_an_unknown_parameter_is_400_listing_the_known_ones(detector: Served) -> None:
    status, reply = post(f"http://{detector.rest_url}/v2/models/{detector.name}/infer",
                         *_with_parameters({"colour": "red"}))
    assert status == 400, reply
    error = json.loads(reply)["error"]
    assert error.startswith("request parameter 'colour' ('red') is not one this server takes; the request "
                            "parameters are: binary_data_output (true or false), ")
    assert "timeout (a whole number of microseconds from 1 to 3600000000)" in error
    _good_request_succeeds(detector)


def test_a_known_parameter_of_the_wrong_type_is_400_with_its_range(detector: Served) -> None:
    status, reply = post(f"http://{detector.rest_url}/v2/models/{detector.name}/infer",
                         *_with_parameters({"priority": "high"}))
    assert status == 400, reply
    assert json.loads(reply)["error"] == ("request parameter 'priority' must be a whole number from 0 to "
                                          "18446744073709551615, got 'high'")
    _good_request_succeeds(detector)


def test_tritonclient_http_with_its_own_parameters_still_gets_the_detections(detector: Served) -> None:
    client = httpclient.InferenceServerClient(detector.rest_url)
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([GOOD], dtype=object))
    plain = client.infer(detector.name, [tensor])
    for outputs in (None, [httpclient.InferRequestedOutput("num_detections", binary_data=False),
                           httpclient.InferRequestedOutput("boxes")]):
        result = client.infer(detector.name, [tensor], outputs=outputs, timeout=30_000_000, priority=2,
                              sequence_id=9, sequence_start=True, sequence_end=True)
        assert result.as_numpy("num_detections").tolist() == plain.as_numpy("num_detections").tolist()
        np.testing.assert_array_equal(result.as_numpy("boxes"), plain.as_numpy("boxes"))
    with pytest.raises(InferenceServerException, match="'confidenceThreshold' \\('abc'\\) is not one"):
        client.infer(detector.name, [tensor], parameters={"confidenceThreshold": "abc"})
    client.close()


def test_tritonclient_grpc_with_its_own_parameters_still_gets_the_detections(detector: Served, workdir: Path) -> None:
    image = workdir / "parameters-scene.jpg"
    image.write_bytes(GOOD)
    results = {}
    for mode in ("image", "image-with-client-options", "image-with-unknown-parameter"):
        out = subprocess.run([sys.executable, "-m", "tests.e2e.triton_grpc_call", detector.grpc_url, detector.name,
                              mode, str(image)], capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
        results[mode] = json.loads(out.stdout)
    assert results["image-with-client-options"]["boxes"] == results["image"]["boxes"], results
    assert results["image-with-client-options"]["num_detections"] == results["image"]["num_detections"]
    refused = results["image-with-unknown-parameter"]
    assert refused["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "request parameter 'confidenceThreshold' ('abc') is not one this server takes" in refused["error"]
    _good_request_succeeds(detector)


def test_the_model_repository_extension_is_refused_on_rest_and_grpc_and_the_model_keeps_serving(
        detector: Served) -> None:
    """KServe serves load/unload on the data plane to whoever reaches the port: one request would stop the model."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    for action in ("unload", "load"):
        status, reply = post(f"http://{detector.rest_url}/v2/repository/models/{detector.name}/{action}", b"")
        assert status == 403 and b"not served here" in reply, (status, reply)
    with grpc.insecure_channel(detector.grpc_url) as channel:
        stub = GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=detector.name), timeout=30)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED, caught.value
    _good_request_succeeds(detector)
