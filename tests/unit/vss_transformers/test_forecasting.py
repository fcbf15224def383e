"""The forecasting task: forecasts with split-conformal intervals at the VSSModel's level, interpolated
between the levels stored in the model, cut to the VSSModel's horizon and in its feature order."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from vss_api.vssmodel import ForecastingParams
from vss_transformers.forecasting import ForecastingTask, as_v1_result, as_v2_tensors, forecasts, interval_radius

FEATURES = ["temperature", "humidity", "pressure", "vibration", "power"]
LEVELS = [0.5, 0.8, 0.9]
# radius [level, step, feature] = (level index + 1) * (step + 1) * (feature + 1)
RADIUS = np.array([[[(lv + 1) * (h + 1) * (f + 1) for f in range(5)] for h in range(6)] for lv in range(3)],
                  np.float32)


def metadata(**change: str) -> dict[str, str]:
    return {"vss.features": json.dumps(FEATURES), "vss.interval_levels": json.dumps(LEVELS),
            "vss.interval_radius": json.dumps(RADIUS.tolist()), **change}


def config(lookback: int = 24, **change: str) -> dict[str, Any]:
    return {"inputs": [{"name": "series", "datatype": "FP32", "shape": [-1, lookback, 5]}],
            "outputs": [{"name": "forecast", "datatype": "FP32", "shape": [-1, 6, 5]}],
            "parameters": {"metadata": metadata(**change)}}


def test_the_radius_at_a_stored_level_is_that_level_and_between_levels_a_linear_mix() -> None:
    np.testing.assert_allclose(interval_radius(metadata(), 0.9, 6, 5), RADIUS[2])
    np.testing.assert_allclose(interval_radius(metadata(), 0.85, 6, 5), (RADIUS[1] + RADIUS[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(interval_radius(metadata(), 0.5, 2, 5), RADIUS[0, :2])


@pytest.mark.parametrize(("level", "horizon", "meta", "message"), [
    (0.95, 6, {}, "outside the calibrated levels"),
    (0.9, 7, {}, "the model forecasts 6 steps"),
    (0.9, 6, {"vss.interval_radius": "[]"}, "has shape"),
    (0.9, 6, {"vss.interval_levels": "oops"}, "lacks its interval calibration"),
])
def test_a_calibration_that_cannot_give_the_vssmodels_interval_is_refused_at_start(
        level: float, horizon: int, meta: dict[str, str], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        interval_radius(metadata(**meta), level, horizon, 5)


def test_intervals_are_the_forecast_plus_and_minus_the_radius() -> None:
    predicted = np.ones((2, 6, 5), np.float32)
    [first, _] = forecasts(predicted, RADIUS[2])

    np.testing.assert_allclose(first.upper - first.predictions, RADIUS[2])
    np.testing.assert_allclose(first.predictions - first.lower, RADIUS[2])


def test_the_task_cuts_the_forecast_to_the_vssmodels_horizon_and_feature_order() -> None:
    client = ["power", "vibration", "pressure", "humidity", "temperature"]
    task = ForecastingTask(ForecastingParams(features=client, horizon=3, interval_level=0.8))
    task.configure(config())
    predicted = np.tile(np.arange(5, dtype=np.float32), (1, 6, 1))  # model column i holds i

    [result] = task.postprocess({"forecast": predicted}, None)

    assert result.predictions.shape == (3, 5)
    np.testing.assert_array_equal(result.predictions[0], [4, 3, 2, 1, 0])
    np.testing.assert_allclose(result.upper[:, 0] - result.predictions[:, 0], RADIUS[1, :3, 4])


def test_a_model_with_another_lookback_is_refused_at_start() -> None:
    with pytest.raises(RuntimeError, match="the model reads 48 steps"):
        ForecastingTask(ForecastingParams()).configure(config(lookback=48))


def test_v2_tensors_and_the_v1_result_of_a_forecast() -> None:
    [result] = forecasts(np.zeros((1, 6, 5), np.float32), RADIUS[2])

    tensors = as_v2_tensors([result])
    v1 = as_v1_result(result, FEATURES, 0.9, 0.002)

    assert tensors["predictions"].shape == (1, 6, 5) and tensors["lower"].dtype == np.float32
    assert tensors["forecast_horizon"].tolist() == [6]
    assert v1["forecast_horizon"] == 6
    assert v1["predictions"]["power"] == [0.0] * 6  # type: ignore[index]
    intervals = v1["confidence_intervals"]
    assert intervals["level"] == 0.9  # type: ignore[index]
    assert intervals["upper"]["temperature"][5] == pytest.approx(18.0)  # type: ignore[index]
    json.dumps(v1)


def test_a_batch_of_forecasts_gives_each_window_its_own_and_the_same_v2_tensors_as_window_by_window() -> None:
    predicted = np.random.default_rng(5).normal(20, 3, (64, 6, 5)).astype(np.float32)

    batch = forecasts(predicted, RADIUS[2])
    fast, slow = as_v2_tensors(batch), as_v2_tensors(list(batch))

    assert len(batch) == 64
    for i, forecast in enumerate(batch):
        np.testing.assert_array_equal(forecast.predictions, predicted[i])
        np.testing.assert_array_equal(forecast.lower, (predicted[i] - RADIUS[2]).astype(np.float32))
        np.testing.assert_array_equal(forecast.upper, (predicted[i] + RADIUS[2]).astype(np.float32))
    assert fast.keys() == slow.keys()
    for name in fast:
        assert fast[name].dtype == slow[name].dtype and fast[name].shape == slow[name].shape, name
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
