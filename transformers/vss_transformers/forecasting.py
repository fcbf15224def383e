"""Forecasting of sensor windows: the request checks of `series.py`, then the forecast and its split-
conformal interval at the VSSModel's `intervalLevel`, from the radii stored in the model's metadata
(see `models/vss_models/timeseries/forecasters.py`).

Request: v2 `series` FP32 [N, lookback, F] or v1 instances (see `series.py`).
Response, per window:
  v1 `{"predictions": {feature: [horizon values]}, "confidence_intervals": {"lower": {feature: [...]},
       "upper": {feature: [...]}, "level": 0.9}, "forecast_horizon": 6, "processing_time"}`;
  v2 `predictions`, `lower`, `upper` FP32 [N, horizon, F] (the VSSModel's feature order) and
     `forecast_horizon` INT32 [N]."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from vss_api.v2 import Array
from vss_api.vssmodel import ForecastingParams
from vss_transformers.series import (
    F32,
    SeriesLayout,
    SeriesRequests,
    SeriesTask,
    model_features,
    series_input,
)


@dataclass(frozen=True)
class Forecast:
    predictions: F32  # [H, F] in the VSSModel's feature order
    lower: F32
    upper: F32


def interval_radius(meta: Mapping[str, str], level: float, horizon: int, width: int) -> F32:
    """The conformal radius [horizon, F] (model order) at `level`, linear between the stored levels."""
    try:
        levels = np.asarray(json.loads(meta["vss.interval_levels"]), dtype=np.float64)
        radius = np.asarray(json.loads(meta["vss.interval_radius"]), dtype=np.float32)
    except (KeyError, ValueError, TypeError) as exc:
        raise RuntimeError(f"the forecasting model's metadata lacks its interval calibration ({exc}); "
                           "build it with `vss models build`") from exc
    if radius.ndim != 3 or radius.shape[0] != levels.size or radius.shape[2] != width:
        raise RuntimeError(f"vss.interval_radius has shape {list(radius.shape)}, expected "
                           f"[{levels.size}, horizon, {width}]")
    if radius.shape[1] < horizon:
        raise RuntimeError(f"the model forecasts {radius.shape[1]} steps, spec.transformer.forecasting"
                           f".horizon is {horizon}")
    if not levels[0] - 1e-9 <= level <= levels[-1] + 1e-9:
        raise RuntimeError(f"intervalLevel {level} is outside the calibrated levels "
                           f"{levels[0]:.2f}..{levels[-1]:.2f}")
    upper = min(int(np.searchsorted(levels, level - 1e-9)), levels.size - 1)
    if upper == 0 or abs(levels[upper] - level) < 1e-9:
        chosen: F32 = radius[upper, :horizon]
        return chosen
    w = (level - levels[upper - 1]) / (levels[upper] - levels[upper - 1])
    mixed: F32 = ((1 - w) * radius[upper - 1, :horizon] + w * radius[upper, :horizon]).astype(np.float32)
    return mixed


@dataclass(frozen=True, eq=False)
class Forecasts(Sequence[Forecast]):
    """The forecasts of a batch of windows as [N, H, F] arrays (the VSSModel's feature order): the v2 tensors are
    these arrays, with no per-window objects on the way; indexing gives one window's `Forecast`."""

    predictions: F32
    lower: F32
    upper: F32

    def __len__(self) -> int:
        return int(self.predictions.shape[0])

    @overload
    def __getitem__(self, index: int) -> Forecast: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Forecast]: ...

    def __getitem__(self, index: int | slice) -> Forecast | Sequence[Forecast]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        return Forecast(self.predictions[index], self.lower[index], self.upper[index])


def forecasts(predicted: F32, radius: F32) -> Forecasts:
    """Per window: predictions [H, F] with their interval, all in the same feature order."""
    predicted = np.asarray(predicted, dtype=np.float32)
    return Forecasts(predicted, (predicted - radius).astype(np.float32), (predicted + radius).astype(np.float32))


def as_v2_tensors(results: Sequence[Forecast]) -> dict[str, npt.NDArray[np.generic]]:
    if isinstance(results, Forecasts):
        return {"predictions": results.predictions, "lower": results.lower, "upper": results.upper,
                "forecast_horizon": np.full(len(results), results.predictions.shape[1], dtype=np.int32)}
    return {"predictions": np.stack([r.predictions for r in results]),
            "lower": np.stack([r.lower for r in results]),
            "upper": np.stack([r.upper for r in results]),
            "forecast_horizon": np.array([r.predictions.shape[0] for r in results], dtype=np.int32)}


def _by_feature(values: F32, features: Sequence[str]) -> dict[str, list[float]]:
    return {f: [round(float(v), 5) for v in values[:, i]] for i, f in enumerate(features)}


def as_v1_result(result: Forecast, features: Sequence[str], level: float, seconds: float) -> dict[str, object]:
    return {
        "predictions": _by_feature(result.predictions, features),
        "confidence_intervals": {"lower": _by_feature(result.lower, features),
                                 "upper": _by_feature(result.upper, features), "level": level},
        "forecast_horizon": int(result.predictions.shape[0]),
        "processing_time": round(seconds, 4),
    }


class ForecastingTask(SeriesTask[Forecast]):
    name = "forecasting"
    field = "spec.transformer.forecasting.lookback"

    def __init__(self, params: ForecastingParams) -> None:
        self.params = params
        self.features = tuple(params.features)
        self.requests = SeriesRequests(SeriesLayout(self.features, params.lookback, self.field,
                                                    params.max_batch))
        self.output_name = "forecast"
        self.radius: F32 | None = None  # [horizon, F] in the VSSModel's order

    def configure(self, config: Mapping[str, Any]) -> None:
        self.input_name = series_input(config, self.params.lookback, len(self.features), self.field)
        outputs = config.get("outputs") or []
        if len(outputs) != 1 or len(outputs[0].get("shape", [])) != 3:
            raise RuntimeError(f"a forecaster has one [N, horizon, features] output, got {outputs}")
        self.output_name = str(outputs[0]["name"])
        meta = {str(k): str(v) for k, v in ((config.get("parameters") or {}).get("metadata") or {}).items()}
        order = model_features(meta, self.features)
        layout = SeriesLayout(self.features, self.params.lookback, self.field, self.params.max_batch, order)
        self.requests = SeriesRequests(layout)
        radius = interval_radius(meta, self.params.interval_level, self.params.horizon, len(self.features))
        self.radius = radius[:, layout.to_client]

    def postprocess(self, outputs: Mapping[str, Array], context: None) -> Forecasts:
        assert self.radius is not None, "configure() runs before serving"
        predicted = outputs[self.output_name].astype(np.float32)
        if predicted.ndim != 3 or predicted.shape[1] < self.params.horizon:
            raise RuntimeError(f"forecast output {list(predicted.shape)} is not [N, >= {self.params.horizon}, F]")
        client = predicted[:, :self.params.horizon][..., self.requests.layout.to_client]
        return forecasts(client, self.radius)

    def v2_outputs(self, results: Sequence[Forecast]) -> dict[str, npt.NDArray[np.generic]]:
        return as_v2_tensors(results)

    def v1_result(self, result: Forecast, seconds: float) -> dict[str, object]:
        return as_v1_result(result, self.features, self.params.interval_level, seconds)

    def output_specs(self) -> list[dict[str, Any]]:
        shape = [-1, self.params.horizon, len(self.features)]
        return [{"name": "predictions", "datatype": "FP32", "shape": shape},
                {"name": "lower", "datatype": "FP32", "shape": shape},
                {"name": "upper", "datatype": "FP32", "shape": shape},
                {"name": "forecast_horizon", "datatype": "INT32", "shape": [-1]}]
