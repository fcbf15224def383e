"""Hypothesis strategies for v2 inference requests that reach the tensors: the inputs the tasks read (and others),
every datatype (and made-up ones), shapes with zero, negative and huge dimensions or ones that disagree with the
contents, contents whose length lies, and parameters of every kind. Rendered as a gRPC `ModelInferRequest` or as a
REST JSON body; the fuzz tests send them."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from tests.e2e.conftest import jpeg, png

DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES", "BF16")
ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4,
              "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}
INPUT_NAMES = ("image", "pixels", "series", "features")
PARAMETER_NAMES = ("timeout", "binary_data_output", "binary_data_size", "binary_data", "sequence_id", "priority",
                   "content_type", "shared_memory_region", "classification", "confidenceThreshold")
INT64 = (-(1 << 63), (1 << 63) - 1)
HUGE_DIMS = (100_000, 1 << 31, (1 << 32) + 3, 1 << 62, INT64[1])


def _small_images() -> tuple[bytes, ...]:
    image = np.zeros((48, 64, 3), np.uint8)
    image[8:24, 8:40, 0] = 255
    return jpeg(image), png(image), b"\xff\xd8\xff\xe0 not really a jpeg", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b""


IMAGES = _small_images()


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    raw: bytes  # binary contents (gRPC raw_input_contents / REST binary data)
    values: list[Any] = field(default_factory=list)  # typed contents (gRPC *_contents / REST JSON data)
    parameters: dict[str, Any] = field(default_factory=dict)
    use_raw: bool = True


@dataclass
class Request:
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]
    inputs: list[Tensor]
    outputs: list[tuple[str, dict[str, Any]]]
    extra_raw: list[bytes]  # raw contents beyond one per input: a count that lies


def parameter_values() -> st.SearchStrategy[Any]:
    return st.one_of(st.booleans(), st.integers(*INT64), st.integers(0, (1 << 64) - 1), st.text(max_size=12),
                     st.floats(allow_nan=True), st.none())


def parameters() -> st.SearchStrategy[dict[str, Any]]:
    names = st.one_of(st.sampled_from(PARAMETER_NAMES), st.text(max_size=8))
    return st.dictionaries(names, parameter_values(), max_size=3)


def shapes() -> st.SearchStrategy[list[int]]:
    dim = st.one_of(st.integers(0, 6), st.integers(-3, -1), st.sampled_from(HUGE_DIMS), st.integers(*INT64))
    common = st.sampled_from([[1], [2], [1, 48, 64, 3], [48, 64, 3], [1, 100_000, 100_000, 3], [0, 4, 4, 3],
                              [1, 100, 5], [100, 5], [1, -1, 64, 3], [5]])
    return st.one_of(common, st.lists(dim, max_size=5))


def _values(datatype: str, count: int) -> st.SearchStrategy[list[Any]]:
    if datatype == "BOOL":
        item: st.SearchStrategy[Any] = st.booleans()
    elif datatype.startswith(("UINT", "INT")):
        item = st.one_of(st.integers(0, 255), st.integers(*INT64), st.integers(0, (1 << 64) - 1))
    elif datatype.startswith(("FP", "BF")):
        item = st.floats(allow_nan=True, allow_infinity=True, width=32)
    else:
        item = st.one_of(st.sampled_from(IMAGES), st.binary(max_size=16))
    return st.lists(item, min_size=0, max_size=count)


@st.composite
def tensors(draw: st.DrawFn) -> Tensor:
    # made-up names and datatypes one time in four: most tensors are what some task reads, to reach its checks
    name = draw(st.one_of(*[st.sampled_from(INPUT_NAMES)] * 3, st.text(max_size=6)))
    datatype = draw(st.one_of(*[st.sampled_from(("BYTES", "UINT8", "FP32"))] * 2, st.sampled_from(DATATYPES),
                              st.text(max_size=6)))
    shape = draw(shapes())
    elements = int(np.prod([d for d in shape if 0 <= d < 1 << 20], dtype=np.int64)) if shape else 1
    size = min(max(elements, 0), 64 * 64 * 3)
    if datatype == "BYTES":
        items = draw(st.lists(st.sampled_from(IMAGES), min_size=0, max_size=3))
        honest = b"".join(len(i).to_bytes(4, "little") + i for i in items)
        lying = (len(honest) + 1000).to_bytes(4, "little") + honest
        raw = draw(st.sampled_from([honest, lying, honest[:-3] or b"\x01", b"\xff\xff\xff\xff"]))
    else:
        honest_length = size * ITEM_BYTES.get(datatype, 1)
        length = draw(st.sampled_from([honest_length, max(honest_length - 1, 0), honest_length + 1, 0, 7]))
        raw = bytes(draw(st.integers(0, 255)) for _ in range(min(length, 4))) * (length // 4 + 1)
        raw = raw[:length]
    values = draw(_values(datatype if datatype in DATATYPES else "FP32", min(size, 8) + 2))
    return Tensor(name, datatype, shape, raw, values, draw(st.one_of(st.just({}), parameters())))


def good_image() -> Tensor:
    """One JPEG as the vision tasks take it: the envelope's faults alone decide the answer."""
    return Tensor("image", "BYTES", [1], len(IMAGES[0]).to_bytes(4, "little") + IMAGES[0], [IMAGES[0]])


def good_series(readings: int, features: int) -> Tensor:
    """One zero window as the time-series tasks take it (series FP32 [1, readings, features])."""
    values = [0.0] * (readings * features)
    return Tensor("series", "FP32", [1, readings, features], bytes(4 * len(values)), values)


@st.composite
def requests(draw: st.DrawFn, model_name: str, version: str) -> Request:
    """Mostly one fault at a time: the served model, one input, no parameters, all contents raw or all typed are
    each likelier than not, so that most requests get past the envelope to the tensors."""
    inputs = draw(st.one_of(st.lists(tensors(), min_size=1, max_size=1), st.lists(tensors(), max_size=3),
                            st.builds(lambda: [good_image()]),
                            st.sampled_from([(100, 5), (24, 5)]).map(lambda w: [good_series(*w)])))
    mode = draw(st.sampled_from(["raw", "raw", "typed", "mixed"]))
    for tensor in inputs:
        tensor.use_raw = mode == "raw" or (mode == "mixed" and draw(st.booleans()))
    return Request(
        model_name=draw(st.one_of(st.just(model_name), st.just(model_name), st.text(max_size=10))),
        model_version=draw(st.sampled_from(["", "", version, "v2"])),
        id=draw(st.one_of(st.just(""), st.text(max_size=10))),
        parameters=draw(st.one_of(st.just({}), st.just({}), parameters())),
        inputs=inputs,
        outputs=draw(st.one_of(st.just([]), st.lists(st.tuples(st.text(max_size=8), parameters()), max_size=2))),
        extra_raw=draw(st.one_of(st.just([]), st.just([]), st.lists(st.binary(max_size=8), max_size=2))),
    )


def _infer_parameter(value: Any) -> pb.InferParameter:
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int) and INT64[0] <= value <= INT64[1]:
        return pb.InferParameter(int64_param=value)
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    return pb.InferParameter()  # KServe's protos have no double or uint64: a parameter with no value


def _contents(datatype: str, values: list[Any]) -> pb.InferTensorContents:
    if datatype == "BOOL":
        return pb.InferTensorContents(bool_contents=[bool(v) for v in values])
    if datatype in ("UINT64",):
        return pb.InferTensorContents(uint64_contents=[v % (1 << 64) for v in values])
    if datatype in ("INT64",):
        return pb.InferTensorContents(int64_contents=[min(max(v, INT64[0]), INT64[1]) for v in values])
    if datatype.startswith("UINT"):
        return pb.InferTensorContents(uint_contents=[v % (1 << 32) for v in values])
    if datatype.startswith("INT"):
        return pb.InferTensorContents(int_contents=[v % (1 << 31) for v in values])
    if datatype == "FP64":
        return pb.InferTensorContents(fp64_contents=values)
    if datatype == "BYTES":
        return pb.InferTensorContents(bytes_contents=values)
    return pb.InferTensorContents(fp32_contents=values)  # FP32, FP16, BF16 and made-up datatypes


def as_grpc(request: Request) -> pb.ModelInferRequest:
    inputs, raw = [], []
    for tensor in request.inputs:
        message = pb.ModelInferRequest.InferInputTensor(
            name=tensor.name, datatype=tensor.datatype, shape=[min(max(d, INT64[0]), INT64[1]) for d in tensor.shape],
            parameters={k: _infer_parameter(v) for k, v in tensor.parameters.items()})
        if tensor.use_raw:
            raw.append(tensor.raw)
        else:
            message.contents.CopyFrom(_contents(tensor.datatype, tensor.values))
        inputs.append(message)
    return pb.ModelInferRequest(
        model_name=request.model_name, model_version=request.model_version, id=request.id,
        parameters={k: _infer_parameter(v) for k, v in request.parameters.items()}, inputs=inputs,
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(
            name=n, parameters={k: _infer_parameter(v) for k, v in p.items()}) for n, p in request.outputs],
        raw_input_contents=raw + request.extra_raw)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


def as_rest_json(request: Request) -> dict[str, Any]:
    """The request as a JSON body: every tensor's contents as `data` (raw ones as their bytes' values)."""
    inputs = []
    for tensor in request.inputs:
        data = list(tensor.raw) if tensor.use_raw and tensor.datatype != "BYTES" else tensor.values
        inputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape,
                       "data": [_json_value(v) for v in data],
                       "parameters": {k: _json_value(v) for k, v in tensor.parameters.items() if v is not None}})
    body: dict[str, Any] = {"inputs": inputs, "parameters": {k: _json_value(v) for k, v in request.parameters.items()}}
    if request.id:
        body["id"] = request.id
    if request.outputs:
        body["outputs"] = [{"name": n, "parameters": {k: _json_value(v) for k, v in p.items()}}
                           for n, p in request.outputs]
    return body


@st.composite
def rest_binary(draw: st.DrawFn, model_name: str, version: str) -> tuple[bytes, dict[str, str]]:
    """The request in the binary tensor extension: a JSON header whose raw inputs say `binary_data_size`, their
    bytes after it, and `Inference-Header-Content-Length`. Mostly honest; otherwise a size or the header length
    lies (too long, too short, negative, not a number), bytes trail the last tensor, or the header is cut."""
    request = draw(requests(model_name, version))
    body = as_rest_json(request)
    tail = b""
    for tensor, spec in zip(request.inputs, body["inputs"], strict=True):
        if not tensor.use_raw:
            continue
        size = len(tensor.raw) + draw(st.sampled_from([0, 0, 0, 0, -1, 1, -len(tensor.raw) - 1, 1 << 40]))
        spec.pop("data")
        spec["parameters"]["binary_data_size"] = size
        tail += tensor.raw
    tail += b"".join(request.extra_raw)
    head = orjson_dumps(body)
    length: str = str(len(head) + draw(st.sampled_from([0, 0, 0, 0, -1, 1, -len(head), len(tail) + 1])))
    length = draw(st.one_of(st.just(length), st.just(length), st.sampled_from(["", "-5", "abc", "1e3", "7 "])))
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": length}
    return head + tail, headers


def orjson_dumps(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body, allow_nan=False).encode()
