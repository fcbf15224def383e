"""The per-request parameter table: what tritonclient and KServe's clients send on their own is taken on REST and
gRPC, a value of the wrong type or range and a name not in the table are the caller's mistake (400) that says which
parameter, which value and what is allowed."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from tritonclient.http import _utils as http_utils

from vss_api.errors import InvalidRequest
from vss_api.request_parameters import (
    PROTOCOL_PARAMETERS,
    TASK_PARAMETERS,
    Level,
    RequestParameters,
    markdown_table,
)
from vss_api.server import parse_v2_rest_request
from vss_api.vssmodel import AnomalyParams, ClassificationParams, DetectionParams, Task

DETECTION = RequestParameters(Task.DETECTION, DetectionParams())


def _request(parameters: Any = None, input_parameters: Any = None, output_parameters: Any = None) -> InferRequest:
    tensor = InferInput("image", [1], "BYTES", data=[b"x"], parameters=input_parameters)
    outputs = None if output_parameters is None else [RequestedOutput("boxes", parameters=output_parameters)]
    return InferRequest("m", [tensor], parameters=parameters, request_outputs=outputs)


def _http_request(**options: Any) -> InferRequest:
    """The request tritonclient.http's `infer(...)` sends, as the transformer's REST route reads it."""
    image = httpclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([b"jpeg"], dtype=object))
    outputs = [httpclient.InferRequestedOutput("boxes"), httpclient.InferRequestedOutput("scores", binary_data=False)]
    body, json_length = http_utils._get_inference_request(
        inputs=[image], request_id="r1", outputs=options.get("outputs", outputs),
        sequence_id=options.get("sequence_id", 0), sequence_start=False, sequence_end=False,
        priority=options.get("priority", 0),
        timeout=options.get("timeout"), custom_parameters=options.get("parameters"))
    return parse_v2_rest_request(body, json_length, "m")


# tritonclient.grpc and kserve register clashing protobuf symbols: tritonclient builds its requests in a child.
_TRITON_GRPC = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import _utils
out = {}
for key, options in json.loads(sys.argv[1]).items():
    image = grpcclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([b"jpeg"], dtype=object))
    sequence_id = options.get("sequence_id", 0)
    request = _utils._get_inference_request(
        model_name="m", inputs=[image], model_version="", request_id="r1",
        outputs=[grpcclient.InferRequestedOutput("boxes")], sequence_id=sequence_id,
        sequence_start=sequence_id != 0, sequence_end=False, priority=options.get("priority", 0),
        timeout=options.get("timeout"), parameters=options.get("parameters"))
    out[key] = request.SerializeToString().hex()
print(json.dumps(out))
"""

OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {}, "timeout": {"timeout": 2_000_000}, "priority": {"priority": 3}, "sequence id": {"sequence_id": 7},
    "string sequence id": {"sequence_id": "camera-1"}, "bad threshold": {"parameters": {"confidenceThreshold": "abc"}},
    "double threshold": {"parameters": {"confidenceThreshold": 0.3}},
}


@pytest.fixture(scope="module")
def grpc_requests() -> dict[str, bytes]:
    """The ModelInferRequest tritonclient.grpc's `infer(...)` sends for each of `OPTIONS`, serialized."""
    out = subprocess.run([sys.executable, "-c", _TRITON_GRPC, json.dumps(OPTIONS)], capture_output=True,
                         text=True, check=True, timeout=120)
    return {key: bytes.fromhex(value) for key, value in json.loads(out.stdout).items()}


def _grpc_request(grpc_requests: dict[str, bytes], key: str) -> InferRequest:
    """As KServe hands a gRPC request to the model."""
    return InferRequest.from_grpc(pb.ModelInferRequest.FromString(grpc_requests[key]))


@pytest.mark.parametrize("key", [k for k in OPTIONS if "threshold" not in k])
def test_what_tritonclient_grpc_sends_on_its_own_is_taken_for_every_task(grpc_requests: dict[str, bytes],
                                                                        key: str) -> None:
    request = _grpc_request(grpc_requests, key)
    for task in Task:
        RequestParameters(task).check_v2(request)


def test_a_custom_parameter_sent_by_tritonclient_grpc_is_refused_by_name(grpc_requests: dict[str, bytes]) -> None:
    with pytest.raises(InvalidRequest, match=r"^request parameter 'confidenceThreshold' \('abc'\) is not one"):
        DETECTION.check_v2(_grpc_request(grpc_requests, "bad threshold"))


@pytest.mark.parametrize("key", [k for k in OPTIONS if "threshold" not in k] + ["no outputs"])
def test_what_tritonclient_http_sends_on_its_own_is_taken_for_every_task(key: str) -> None:
    options = {"outputs": None} if key == "no outputs" else OPTIONS[key]
    request = _http_request(**options)
    for task in Task:
        RequestParameters(task).check_v2(request)


def test_the_rest_request_of_tritonclient_with_no_outputs_named_asks_for_binary_outputs_and_is_taken() -> None:
    request = _http_request(outputs=None)
    assert request.parameters == {"binary_data_output": True}
    DETECTION.check_v2(request)


def test_what_kserves_own_client_sends_is_taken() -> None:
    tensor = InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"jpeg"], dtype=object), binary_data=True)
    request = InferRequest("m", [tensor], parameters={"content_type": "np"},
                           request_outputs=[RequestedOutput("boxes", parameters={"binary_data": True})])
    body, json_length = request.to_rest()
    DETECTION.check_v2(parse_v2_rest_request(body, json_length, "m"))


@pytest.mark.parametrize(("parameters", "message"), [
    ({"timeout": "abc"}, "request parameter 'timeout' must be a whole number of microseconds from 1 to 3600000000, "
                         "got 'abc'"),
    ({"timeout": 0}, "got 0"),
    ({"binary_data_output": "yes"}, "request parameter 'binary_data_output' must be true or false, got 'yes'"),
    ({"priority": -1}, "request parameter 'priority' must be a whole number from 0 to 18446744073709551615, got -1"),
    ({"priority": True}, "got True"),
    ({"sequence_id": 1.5}, "'sequence_id' must be a whole number from 0 to 18446744073709551615, or a string"),
    ({"sequence_start": 1}, "'sequence_start' must be true or false, got 1"),
    ({"content_type": 5}, "'content_type' must be a string, got 5"),
])
def test_a_request_parameter_of_the_wrong_type_or_range_names_itself_its_value_and_what_is_allowed(
        parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        DETECTION.check_v2(_request(parameters))
    assert message in caught.value.reason


def test_input_and_output_parameters_are_checked_against_their_own_levels() -> None:
    with pytest.raises(InvalidRequest) as caught:
        DETECTION.check_v2(_request(input_parameters={"binary_data_size": -1}))
    assert "input 'image' parameter 'binary_data_size' must be a whole number of bytes" in caught.value.reason
    with pytest.raises(InvalidRequest) as caught:
        DETECTION.check_v2(_request(output_parameters={"binary_data": "no"}))
    assert "output 'boxes' parameter 'binary_data' must be true or false, got 'no'" in caught.value.reason
    with pytest.raises(InvalidRequest) as caught:  # a request-level name is not an output's
        DETECTION.check_v2(_request(output_parameters={"timeout": 5}))
    assert caught.value.reason == ("output 'boxes' parameter 'timeout' (5) is not one this server takes; the output "
                                   "parameters are: binary_data (true or false)")


def test_an_unknown_request_parameter_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as caught:
        DETECTION.check_v2(_request({"colour": "red"}))
    reason = caught.value.reason
    assert reason.startswith("request parameter 'colour' ('red') is not one this server takes; the request "
                             "parameters are: binary_data_output (true or false), content_type (a string), ")
    for name in ("priority", "sequence_end", "sequence_id", "sequence_start", "timeout"):
        assert f"{name} (" in reason


def test_a_setting_of_the_vssmodel_sent_per_request_is_refused_with_where_the_setting_lives() -> None:
    with pytest.raises(InvalidRequest) as caught:
        DETECTION.check_v2(_request({"confidenceThreshold": "abc"}))
    assert caught.value.reason.startswith(
        "request parameter 'confidenceThreshold' ('abc') is not one this server takes: confidenceThreshold is a "
        "setting of the VSSModel, spec.transformer.detection.confidenceThreshold (0.5 for this model), not of a "
        "request; the request parameters are: binary_data_output")
    classifier = RequestParameters(Task.CLASSIFICATION, ClassificationParams(top_k=3))
    with pytest.raises(InvalidRequest, match=r"spec\.transformer\.classification\.topK \(3 for this model\)"):
        classifier.check_v2(_request({"top_k": 10}))
    anomaly = RequestParameters(Task.ANOMALY, AnomalyParams())
    with pytest.raises(InvalidRequest, match=r"spec\.transformer\.anomaly\.threshold \(None for this model\)"):
        anomaly.check_v2(_request({"threshold": 0.2}))


def test_a_setting_of_another_task_is_just_unknown() -> None:
    with pytest.raises(InvalidRequest) as caught:
        DETECTION.check_v2(_request({"topK": 3}))
    assert "setting of the VSSModel" not in caught.value.reason
    assert "the request parameters are:" in caught.value.reason


@pytest.mark.parametrize(("where", "name"), [("input", "shared_memory_region"), ("output", "shared_memory_offset"),
                                             ("output", "classification")])
def test_a_triton_extension_this_server_does_not_serve_is_refused_by_name(where: str, name: str) -> None:
    request = _request(**{f"{where}_parameters": {name: 3}})
    with pytest.raises(InvalidRequest, match=f"parameter '{name}' \\(3\\) asks for Triton's .* extension, which "
                                             "this server does not serve"):
        DETECTION.check_v2(request)


def test_grpc_parameters_are_read_and_checked_as_kserve_reads_them() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    request.parameters["timeout"].string_param = "abc"
    with pytest.raises(InvalidRequest, match=r"'timeout' must be a whole number of microseconds .*, got 'abc'"):
        DETECTION.check_v2(InferRequest.from_grpc(request))
    request.parameters["timeout"].int64_param = 1000
    request.parameters["binary_data_output"].bool_param = True
    DETECTION.check_v2(InferRequest.from_grpc(request))
    request.parameters["unset"].CopyFrom(pb.InferParameter())
    with pytest.raises(InvalidRequest, match=r"'unset' \(None\) is not one"):
        DETECTION.check_v2(InferRequest.from_grpc(request))


def test_a_double_sent_by_tritonclient_grpc_has_no_value_in_kserve_and_an_unknown_name_is_still_refused(
        grpc_requests: dict[str, bytes]) -> None:
    with pytest.raises(InvalidRequest, match=r"^request parameter 'confidenceThreshold' \(None\) is not one"):
        DETECTION.check_v2(_grpc_request(grpc_requests, "double threshold"))


def test_a_known_parameter_left_null_is_a_parameter_left_out() -> None:
    DETECTION.check_v2(_request({"timeout": None, "binary_data_output": None}))


@pytest.mark.parametrize("parameters", [[1], "timeout", 5])
def test_parameters_that_are_not_an_object_are_the_callers_mistake(parameters: Any) -> None:
    with pytest.raises(InvalidRequest, match="request parameters must be an object of name: value"):
        DETECTION.check_v2(_request(parameters))
    with pytest.raises(InvalidRequest, match="input 'image' parameters must be an object"):
        DETECTION.check_v2(_request(input_parameters=parameters))


def test_a_v1_request_takes_no_parameters() -> None:
    DETECTION.check_v1({"instances": []})
    DETECTION.check_v1({"instances": [], "parameters": {}})
    with pytest.raises(InvalidRequest, match=r"^v1 request parameter 'confidenceThreshold' \(0\.2\) is not one this "
                                             r"server takes: .*; the request parameters are: none$"):
        DETECTION.check_v1({"instances": [], "parameters": {"confidenceThreshold": 0.2}})


def test_every_task_takes_the_protocol_parameters_and_nothing_else() -> None:
    assert set(TASK_PARAMETERS) == set(Task)
    for table in TASK_PARAMETERS.values():
        assert set(table.at(Level.REQUEST)) == {"timeout", "binary_data_output", "sequence_id", "sequence_start",
                                                 "sequence_end", "priority", "content_type"}
        assert set(table.at(Level.INPUT)) == {"binary_data_size", "content_type"}
        assert set(table.at(Level.OUTPUT)) == {"binary_data"}


def test_the_readme_shows_the_table_as_the_code_has_it() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    assert markdown_table() in readme
    assert len(PROTOCOL_PARAMETERS) == markdown_table().count("\n| `")


def test_the_error_of_a_long_value_is_cut_short() -> None:
    with pytest.raises(InvalidRequest) as caught:
        DETECTION.check_v2(_request({"x" * 10: "y" * 10_000}))
    assert len(caught.value.reason) < 1000
    json.dumps(caught.value.reason)
