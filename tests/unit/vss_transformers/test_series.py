"""Sensor-window requests: every shape, dtype, feature and value mistake is an InvalidSeries (400) that
names what is wrong; good windows come back in the model's feature order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from vss_transformers.series import InvalidSeries, SeriesLayout, SeriesRequests, check_finite

FEATURES = ("temperature", "humidity", "pressure")
MODEL_ORDER = ("pressure", "temperature", "humidity")


def requests(model_order: tuple[str, ...] | None = None, max_batch: int = 4) -> SeriesRequests:
    return SeriesRequests(SeriesLayout(FEATURES, 5, "spec.transformer.anomaly.window", max_batch, model_order))


def window(n: int = 1) -> np.ndarray:
    """Readings whose value says where they are: 100 * feature + step (+ 1000 * window)."""
    steps = np.arange(5, dtype=np.float32)[None, :, None]
    feature = np.arange(3, dtype=np.float32)[None, None, :] * 100
    return (np.arange(n, dtype=np.float32)[:, None, None] * 1000 + steps + feature).astype(np.float32)


def v2(array: np.ndarray, datatype: str = "FP32", features: list[str] | None = None,
       name: str = "series") -> InferRequest:
    tensor = InferInput(name=name, shape=list(array.shape), datatype=datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    inputs = [tensor]
    if features is not None:
        names = InferInput(name="features", shape=[len(features)], datatype="BYTES")
        names.set_data_from_numpy(np.array([f.encode() for f in features], dtype=object), binary_data=True)
        inputs.append(names)
    return InferRequest(model_name="m", infer_inputs=inputs)


def test_a_v2_window_batch_comes_back_as_float32_in_the_models_feature_order() -> None:
    batch = requests(MODEL_ORDER).parse_v2(v2(window(2)))

    assert batch.dtype == np.float32 and batch.shape == (2, 5, 3)
    np.testing.assert_array_equal(batch[1, :, 0], window(2)[1, :, 2])  # pressure first


def test_a_single_v2_window_without_batch_axis_is_a_batch_of_one() -> None:
    assert requests().parse_v2(v2(window(1)[0])).shape == (1, 5, 3)


def test_a_v2_features_input_names_the_column_order_of_the_series() -> None:
    shuffled = window(1)[..., [2, 0, 1]]  # pressure, temperature, humidity
    batch = requests().parse_v2(v2(shuffled, features=["pressure", "temperature", "humidity"]))

    np.testing.assert_array_equal(batch, window(1))


@pytest.mark.parametrize(("request_", "message"), [
    (v2(window(1).astype(np.float64), "FP64"), "must be FP32, got FP64"),
    (v2(window(1).astype(np.int32), "INT32"), "must be FP32, got INT32"),
    (v2(window(1)[:, :4]), "has 4 steps, the model needs 5 (spec.transformer.anomaly.window)"),
    (v2(window(1)[..., :2]), "has 2 features, expected 3"),
    (v2(window(1), name="readings"), "send input 'series'"),
    (v2(window(1)[0, 0]), "shape [N, steps, features]"),
    (v2(window(1)[..., :2], features=["temperature", "pressure"]), "missing feature 'humidity'"),
    (v2(window(1), features=["temperature", "humidity", "presure"]), "unknown feature 'presure'"),
    (v2(window(1), features=["temperature", "humidity", "humidity"]), "'humidity' is given more than once"),
    (v2(window(5)), "a batch of 5 windows is over the limit of 4"),
    (v2(np.zeros((0, 5, 3), np.float32)), "the batch is empty"),
])
def test_a_v2_request_that_does_not_fit_is_a_400_naming_the_mistake(request_: InferRequest, message: str) -> None:
    with pytest.raises(InvalidSeries) as caught:
        requests().parse_v2(request_)

    assert isinstance(caught.value, InvalidInput)
    assert message in str(caught.value.reason)


def test_v1_rows_with_feature_names_are_reordered_to_the_model() -> None:
    rows = window(1)[0][:, [1, 0, 2]].tolist()  # humidity, temperature, pressure
    payload = {"instances": [{"values": rows, "features": ["humidity", "temperature", "pressure"]}]}

    np.testing.assert_array_equal(requests(MODEL_ORDER).parse_v1(payload), window(1)[..., [2, 0, 1]])


def test_v1_columns_by_feature_name_and_bare_rows_are_windows_too() -> None:
    columns = {"series": {f: window(1)[0, :, i].tolist() for i, f in enumerate(FEATURES)}}
    bare = window(1)[0].tolist()

    batch = requests().parse_v1({"instances": [columns, bare]})

    np.testing.assert_array_equal(batch, np.concatenate([window(1), window(1)]))


def _rows(**change: Any) -> dict[str, Any]:
    rows = window(1)[0].tolist()
    for (t, f), value in change.get("at", {}).items():
        rows[t][f] = value
    return {"values": rows}


@pytest.mark.parametrize(("instance", "message"), [
    (_rows(at={(2, 1): "21.5"}), "instances[0].values[2][1] (humidity) must be a number, got str '21.5'"),
    (_rows(at={(3, 0): None}), "instances[0].values[3][0] (temperature) must be a number, got null"),
    (_rows(at={(0, 0): True}), "must be a number, got bool True"),
    ({"values": window(1)[0, :4].tolist()}, "instances[0] has 4 steps, the model needs 5"),
    ({"values": [r[:2] for r in window(1)[0].tolist()]}, "values[0] has 2 readings, expected 3"),
    ({"values": window(1)[0].tolist(), "features": ["temperature", "humidity", "wind"]}, "unknown feature 'wind'"),
    ({"series": {"temperature": [1.0] * 5, "humidity": [1.0] * 5}}, "missing feature 'pressure'"),
    ({"series": {"temperature": [1.0] * 5, "humidity": [1.0] * 4, "pressure": [1.0] * 5}},
     "series.humidity has 4 readings, the model needs 5"),
    ({"readings": []}, "needs 'values' (rows of readings) or 'series'"),
    ("a string", "must be an object"),
])
def test_a_v1_instance_that_does_not_fit_is_a_400_naming_where(instance: Any, message: str) -> None:
    with pytest.raises(InvalidSeries) as caught:
        requests().parse_v1({"instances": [instance]})

    assert message in str(caught.value.reason)


def test_a_v1_request_without_instances_says_what_to_send() -> None:
    with pytest.raises(InvalidSeries, match="instances"):
        requests().parse_v1({"inputs": []})


@pytest.mark.parametrize(("value", "kind"), [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_a_non_finite_reading_is_refused_with_its_window_step_and_feature(value: float, kind: str) -> None:
    batch = window(2)
    batch[1, 3, 2] = value

    with pytest.raises(InvalidSeries) as caught:
        check_finite(batch, FEATURES)

    assert f"window 1, step 3, feature 'pressure' is {kind}" in str(caught.value.reason)
    assert "fill gaps" in str(caught.value.reason)


def test_finite_windows_pass_unchanged() -> None:
    batch = window(2)
    assert check_finite(batch, FEATURES) is batch


def test_a_model_whose_features_are_not_the_vssmodels_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not the VSSModel's"):
        SeriesLayout(FEATURES, 5, "window", 4, ("temperature", "humidity", "wind"))


def test_a_features_tensor_whose_element_lengths_run_past_its_bytes_is_a_400() -> None:
    """Found by tests/e2e/test_fuzz_grpc.py: KServe's BYTES decoding raises struct.error, which was a 500."""
    series = InferInput(name="series", shape=[1, 5, 3], datatype="FP32")
    features = InferInput(name="features", shape=[3], datatype="BYTES")
    request = InferRequest(model_name="m", infer_inputs=[series, features], from_grpc=True,
                           raw_inputs=[np.zeros((1, 5, 3), np.float32).tobytes(), b"\xff\xff\xff\xff"])
    with pytest.raises(InvalidSeries, match="input 'features' does not match its shape"):
        requests().parse_v2(request)
