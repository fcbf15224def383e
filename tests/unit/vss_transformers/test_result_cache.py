"""The result cache's pure parts: keys (what makes two requests the same answer), the stored forms of an answer,
and the breaker that leaves a failing Redis alone."""

from __future__ import annotations

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from vss_api.request_parameters import PROTOCOL_PARAMETERS
from vss_transformers.result_cache import (
    NEUTRAL_PARAMETERS,
    Breaker,
    CorruptEntry,
    decode_v1,
    decode_v2,
    encode_v1,
    encode_v2,
    model_identity,
    v1_key,
    v2_key,
)

CONFIG = {"name": "cells", "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
          "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, 84, -1]}], "max_batch_size": 8,
          "parameters": {"providers": ["CPUExecutionProvider"], "metadata": {"names": "{0: 'person'}"}}}
SETTINGS = {"confidenceThreshold": 0.5, "iouThreshold": 0.45}
IDENTITY = model_identity("cells", "v1", "detection", SETTINGS, CONFIG)
FRAME = b"\xff\xd8 pretend jpeg bytes \xff\xd9"


def _image_request(*images: bytes, parameters: dict[str, object] | None = None) -> InferRequest:
    tensor = InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(list(images), dtype=object), binary_data=True)
    return InferRequest("cells", infer_inputs=[tensor], parameters=parameters)


def _pixels_request(pixels: np.ndarray) -> InferRequest:
    tensor = InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    return InferRequest("cells", infer_inputs=[tensor])


def test_the_same_bytes_give_the_same_key_whatever_else_the_request_says() -> None:
    first = v2_key(IDENTITY, _image_request(FRAME, parameters={"timeout": 5000}))
    again = v2_key(IDENTITY, _image_request(FRAME, parameters={"binary_data_output": True, "priority": 3}))
    assert first == again
    assert first.startswith("vss:result:1:") and len(first.rsplit(":", 1)[1]) == 64


def test_other_bytes_another_model_version_or_other_settings_give_another_key() -> None:
    key = v2_key(IDENTITY, _image_request(FRAME))
    others = {
        v2_key(IDENTITY, _image_request(FRAME + b"\x00")),
        v2_key(IDENTITY, _image_request(FRAME, FRAME)),  # a batch of two is another answer
        v2_key(model_identity("cells", "v2", "detection", SETTINGS, CONFIG), _image_request(FRAME)),
        v2_key(model_identity("other", "v1", "detection", SETTINGS, CONFIG), _image_request(FRAME)),
        v2_key(model_identity("cells", "v1", "detection", {**SETTINGS, "confidenceThreshold": 0.6}, CONFIG),
               _image_request(FRAME)),
        v2_key(model_identity("cells", "v1", "detection", SETTINGS,
                              {**CONFIG, "parameters": {"metadata": {"names": "{0: 'car'}"}}}), _image_request(FRAME)),
    }
    assert key not in others and len(others) == 6


def test_a_request_parameter_not_known_to_be_neutral_is_part_of_the_key() -> None:
    """Safe by default: a parameter added to the table later changes the key until it is declared neutral."""
    assert v2_key(IDENTITY, _image_request(FRAME, parameters={"topK": 3})) != v2_key(
        IDENTITY, _image_request(FRAME, parameters={"topK": 5}))


def test_every_parameter_the_server_takes_today_is_declared_neutral_for_a_reason() -> None:
    """The protocol parameters change no answer (vss_api.request_parameters); a new one must be classified."""
    assert {p.name for p in PROTOCOL_PARAMETERS} == NEUTRAL_PARAMETERS


def test_pixels_keys_depend_on_shape_as_well_as_bytes() -> None:
    pixels = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    same_bytes_other_shape = pixels.reshape(2, 4, 3, 3)
    assert v2_key(IDENTITY, _pixels_request(pixels)) == v2_key(IDENTITY, _pixels_request(pixels.copy()))
    assert v2_key(IDENTITY, _pixels_request(pixels)) != v2_key(IDENTITY, _pixels_request(same_bytes_other_shape))


def test_json_tensors_are_keyed_by_their_values() -> None:
    def request(text: str) -> InferRequest:  # JSON clients send BYTES as (base64) strings
        return InferRequest("cells", infer_inputs=[InferInput("image", [1], "BYTES", data=[text])])

    assert v2_key(IDENTITY, request("QUJD")) == v2_key(IDENTITY, request("QUJD"))
    assert v2_key(IDENTITY, request("QUJD")) != v2_key(IDENTITY, request("QUJE"))


def test_v1_bodies_are_keyed_apart_from_v2_and_regardless_of_member_order() -> None:
    body = {"instances": [{"image": {"b64": "AAAA"}}], "x": 1}
    assert v1_key(IDENTITY, body) == v1_key(IDENTITY, {"x": 1, "instances": [{"image": {"b64": "AAAA"}}]})
    assert v1_key(IDENTITY, body) != v1_key(IDENTITY, {"instances": [{"image": {"b64": "AAAB"}}], "x": 1})


def test_a_v2_answer_comes_back_from_its_stored_form_exactly() -> None:
    tensors = {"boxes": np.array([[[1.5, 2.0, 30.25, 40.0]]], dtype=np.float32),
               "scores": np.array([[0.875]], dtype=np.float32),
               "class_ids": np.array([[2]], dtype=np.int32),
               "labels": np.array([[b"person"]], dtype=object),
               "num_detections": np.array([1], dtype=np.int32)}
    back = decode_v2(encode_v2(tensors))
    assert list(back) == list(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert back[name].tolist() == array.tolist()


def test_a_v1_answer_comes_back_from_its_stored_form() -> None:
    predictions: list[dict[str, object]] = [{"objects": [], "total_objects": 0, "processing_time": 0.01}]
    assert decode_v1(encode_v1(predictions)) == predictions


@pytest.mark.parametrize("value", [b"", b"not json", b'{"format": 99, "protocol": "v2", "outputs": []}',
                                   b'{"format": 1, "protocol": "v2", "outputs": [{"name": "x"}]}',
                                   b"\x80\x04\x95 a pickle"])
def test_a_value_that_is_not_an_answer_of_this_format_is_refused_not_trusted(value: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode_v2(value)
    with pytest.raises(CorruptEntry):
        decode_v1(value)


def test_the_breaker_opens_on_a_failure_and_lets_one_trial_through_after_its_delay() -> None:
    breaker = Breaker(min_delay_s=0.5, max_delay_s=4.0)
    assert breaker.admit(0.0) is False
    breaker.failed(False, 0.0)
    assert breaker.admit(0.1) is None
    breaker.failed(False, 0.2)  # a call admitted before it opened: no longer
    assert breaker.open_until == 0.5
    assert breaker.admit(0.6) is True
    assert breaker.admit(0.6) is None  # one trial at a time
    breaker.failed(True, 0.7)
    assert (breaker.delay_s, breaker.open_until) == (1.0, 1.7)
    for now in (1.8, 4.0, 9.0, 20.0):  # doubling, up to the limit
        assert breaker.admit(now) is True
        breaker.failed(True, now)
    assert breaker.delay_s == 4.0
    assert breaker.admit(30.0) is True
    breaker.succeeded(True)
    assert breaker.closed and breaker.admit(30.0) is False
