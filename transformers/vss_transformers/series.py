"""Sensor-window requests, shared by the time-series tasks (anomaly, forecasting), checked so that every
caller mistake is a 400 that says what to fix.

v2: `series` FP32 [N, T, F] (or one window [T, F]), features along the last axis in the order of the
VSSModel's `features`; an optional `features` BYTES [F] input names another order.
v1: `{"instances": [WINDOW, ...]}`, each WINDOW one of
    `{"values": [[f1, ..., fF], ...T rows], "features": ["temperature", ...]}` (`features` optional:
        the VSSModel's order),
    `{"series": {"temperature": [T readings], "humidity": [...], ...}}` (one list per feature),
    `[[f1, ..., fF], ...T rows]` (a bare window, the VSSModel's order).
Readings must be finite numbers: a gap is filled by the client (e.g. with the last reading) before sending,
since only the client knows whether a gap is an outage or a reading that was never taken."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from kserve.protocol.infer_type import InferInput, InferRequest

from vss_api.errors import InvalidRequest
from vss_api.tracing import stage
from vss_api.v2 import CONTENT_ERRORS, Array
from vss_transformers.tasks import Result, ServingTask

F32 = npt.NDArray[np.float32]


class InvalidSeries(InvalidRequest):
    """A window that does not fit the model: length, features, dtype or non-finite readings."""


@dataclass(frozen=True)
class SeriesLayout:
    """What a window must look like: `steps` readings of `features`, in the client's order; `model_order`
    is the order of the model's last axis (the same names, maybe permuted)."""

    features: tuple[str, ...]
    steps: int
    steps_field: str  # the VSSModel field that sets `steps`, named in errors
    max_batch: int
    model_order: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.model_order is not None and sorted(self.model_order) != sorted(self.features):
            raise ValueError(f"the model's features {list(self.model_order)} are not the VSSModel's "
                             f"{list(self.features)}")

    @property
    def to_client(self) -> npt.NDArray[np.intp]:
        """Column indices that put model-ordered features back into the client's order."""
        order = self.model_order or self.features
        return np.array([order.index(f) for f in self.features], dtype=np.intp)


@dataclass(frozen=True)
class SeriesRequests:
    layout: SeriesLayout

    def v2_inputs(self) -> list[dict[str, Any]]:
        return [{"name": "series", "datatype": "FP32", "shape": [-1, self.layout.steps,
                                                                 len(self.layout.features)]},
                {"name": "features", "datatype": "BYTES", "shape": [len(self.layout.features)]}]

    # --- v2 --------------------------------------------------------------------------------------
    def parse_v2(self, request: InferRequest) -> F32:
        by_name = {t.name: t for t in request.inputs}
        unknown = sorted(set(by_name) - {"series", "features"})
        if unknown or "series" not in by_name:
            raise InvalidSeries(f"send input 'series' (FP32 [N, {self.layout.steps}, "
                                f"{len(self.layout.features)}]) and optionally 'features' (BYTES); "
                                f"got {sorted(by_name)}")
        tensor = by_name["series"]
        if tensor.datatype != "FP32":
            raise InvalidSeries(f"input 'series' must be FP32, got {tensor.datatype}")
        shape = [int(d) for d in tensor.shape]
        if len(shape) not in (2, 3):
            raise InvalidSeries(f"input 'series' must have shape [N, steps, features] or [steps, features], "
                                f"got {shape}")
        names = self._feature_names(by_name.get("features"))
        self._check_shape(shape[-2], shape[-1], names)
        try:
            array = np.asarray(tensor.as_numpy(), dtype=np.float32)
        except CONTENT_ERRORS as exc:
            raise InvalidSeries(f"input 'series' does not match its shape {shape}: {exc}") from exc
        batch = array.reshape(shape) if len(shape) == 3 else array.reshape(1, *shape)
        self._check_batch(batch.shape[0])
        columns = self._columns(names)
        if np.array_equal(columns, np.arange(len(columns))):
            return batch  # already in the model's order: no copy
        return batch[..., columns]

    def _feature_names(self, tensor: InferInput | None) -> tuple[str, ...]:
        if tensor is None:
            return self.layout.features
        if tensor.datatype != "BYTES":
            raise InvalidSeries(f"input 'features' must be BYTES (feature names), got {tensor.datatype}")
        try:
            raw = tensor.as_numpy().reshape(-1)
        except CONTENT_ERRORS as exc:
            raise InvalidSeries(f"input 'features' does not match its shape {tensor.shape}: {exc}") from exc
        names = []
        for i, item in enumerate(raw):
            if isinstance(item, (bytes, bytearray)):
                try:
                    names.append(bytes(item).decode())
                except UnicodeDecodeError as exc:
                    raise InvalidSeries(f"features[{i}] is not UTF-8 text") from exc
            elif isinstance(item, str):
                names.append(item)
            else:
                raise InvalidSeries(f"features[{i}] must be a name, got {type(item).__name__}")
        return self._check_names(names)

    # --- v1 --------------------------------------------------------------------------------------
    def parse_v1(self, payload: Mapping[str, Any]) -> F32:
        instances = payload.get("instances")
        if not isinstance(instances, list):
            raise InvalidSeries('v1 requests need "instances": [{"values": [[...], ...], "features": [...]}]')
        self._check_batch(len(instances))
        return np.stack([self._instance(i, inst) for i, inst in enumerate(instances)])

    def _instance(self, index: int, instance: Any) -> F32:
        where = f"instances[{index}]"
        if isinstance(instance, list):
            return self._rows(where, instance, self.layout.features)
        if not isinstance(instance, dict):
            raise InvalidSeries(f"{where} must be an object with 'values' or 'series', or a list of rows")
        if "series" in instance:
            columns = instance["series"]
            if not isinstance(columns, dict):
                raise InvalidSeries(f"{where}.series must map each feature name to its readings")
            self._check_names(list(columns), where=f"{where}.series")
            out = np.empty((self.layout.steps, len(columns)), dtype=np.float32)
            for column, name in enumerate(self.layout.model_order or self.layout.features):
                out[:, column] = self._readings(f"{where}.series.{name}", columns[name])
            return out
        if "values" not in instance:
            raise InvalidSeries(f"{where} needs 'values' (rows of readings) or 'series' (readings by feature)")
        names = self.layout.features
        if "features" in instance:
            given = instance["features"]
            if not isinstance(given, list) or not all(isinstance(n, str) for n in given):
                raise InvalidSeries(f"{where}.features must be a list of feature names")
            names = self._check_names(given, where=f"{where}.features")
        return self._rows(where, instance["values"], names)

    def _rows(self, where: str, rows: Any, names: tuple[str, ...]) -> F32:
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise InvalidSeries(f"{where}.values must be a list of rows, one per step, each a list of "
                                f"{len(names)} readings")
        self._check_shape(len(rows), None, names, where=where)
        widths = {len(r) for r in rows}
        if widths != {len(names)}:
            bad = next(i for i, r in enumerate(rows) if len(r) != len(names))
            raise InvalidSeries(f"{where}.values[{bad}] has {len(rows[bad])} readings, expected "
                                f"{len(names)} ({', '.join(names)})")
        for t, row in enumerate(rows):
            for f, value in enumerate(row):
                if not _is_number(value):
                    raise InvalidSeries(f"{where}.values[{t}][{f}] ({names[f]}) must be a number, "
                                        f"got {_describe(value)}")
        array = np.asarray(rows, dtype=np.float32)
        return array[:, self._columns(names)]

    def _readings(self, where: str, values: Any) -> F32:
        if not isinstance(values, list):
            raise InvalidSeries(f"{where} must be a list of {self.layout.steps} readings")
        if len(values) != self.layout.steps:
            raise InvalidSeries(f"{where} has {len(values)} readings, the model needs {self.layout.steps} "
                                f"({self.layout.steps_field})")
        for t, value in enumerate(values):
            if not _is_number(value):
                raise InvalidSeries(f"{where}[{t}] must be a number, got {_describe(value)}")
        return np.asarray(values, dtype=np.float32)

    # --- shared checks -----------------------------------------------------------------------------
    def _check_names(self, names: Sequence[str], where: str = "features") -> tuple[str, ...]:
        known = self.layout.features
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InvalidSeries(f"{where}: unknown feature {unknown[0]!r}; the model reads {list(known)}")
        duplicated = sorted({n for n in names if list(names).count(n) > 1})
        if duplicated:
            raise InvalidSeries(f"{where}: feature {duplicated[0]!r} is given more than once")
        missing = [n for n in known if n not in names]
        if missing:
            raise InvalidSeries(f"{where}: missing feature {missing[0]!r}; the model reads {list(known)}")
        return tuple(names)

    def _check_shape(self, steps: int | None, width: int | None, names: Sequence[str],
                     where: str = "input 'series'") -> None:
        if steps is not None and steps != self.layout.steps:
            raise InvalidSeries(f"{where} has {steps} steps, the model needs {self.layout.steps} "
                                f"({self.layout.steps_field})")
        if width is not None and width != len(names):
            raise InvalidSeries(f"{where} has {width} features, expected {len(names)} ({', '.join(names)})")

    def _check_batch(self, count: int) -> None:
        if count == 0:
            raise InvalidSeries("the batch is empty: send at least one window")
        if count > self.layout.max_batch:
            raise InvalidSeries(f"a batch of {count} windows is over the limit of {self.layout.max_batch}")

    def _columns(self, names: Sequence[str]) -> npt.NDArray[np.intp]:
        """Indices that reorder columns given in `names` order into the model's order."""
        order = self.layout.model_order or self.layout.features
        return np.array([list(names).index(f) for f in order], dtype=np.intp)


class SeriesTask(ServingTask[F32, None, Result]):
    """What the sensor tasks share: windows of readings in (v2 `series` or v1 instances), one FP32
    [N, T, F] tensor to the predictor in the model's feature order."""

    input_name = "series"
    requests: SeriesRequests

    def input_specs(self) -> list[dict[str, Any]]:
        return self.requests.v2_inputs()

    def parse_v2(self, request: InferRequest) -> F32:
        return self.requests.parse_v2(request)

    def parse_v1(self, payload: dict[str, Any]) -> F32:
        return self.requests.parse_v1(payload)

    def warmup_request(self) -> F32:
        layout = self.requests.layout
        return np.zeros((1, layout.steps, len(layout.features)), dtype=np.float32)

    def prepare(self, parsed: F32) -> tuple[dict[str, Array], None]:
        order = self.requests.layout.model_order or self.requests.layout.features
        with stage("preprocess"):
            return {self.input_name: check_finite(np.ascontiguousarray(parsed), order)}, None


def series_input(config: Mapping[str, Any], steps: int, width: int, steps_field: str) -> str:
    """The name of the predictor's one FP32 [N, steps, width] input, or why it does not fit."""
    inputs = config.get("inputs") or []
    if len(inputs) != 1 or inputs[0].get("datatype") != "FP32" or len(inputs[0].get("shape", [])) != 3:
        raise RuntimeError("a time-series model takes one FP32 [N, steps, features] input (start the "
                           f"predictor without --normalize), got {inputs}")
    _, model_steps, model_width = inputs[0]["shape"]
    if model_steps not in (-1, steps):
        raise RuntimeError(f"the model reads {model_steps} steps but {steps_field} is {steps}")
    if model_width not in (-1, width):
        raise RuntimeError(f"the model reads {model_width} features but the VSSModel names {width}")
    return str(inputs[0]["name"])


def model_features(meta: Mapping[str, str], features: Sequence[str]) -> tuple[str, ...] | None:
    """The model's own feature order from its metadata; it must name the VSSModel's features."""
    if "vss.features" not in meta:
        return None
    stored = tuple(str(f) for f in json.loads(meta["vss.features"]))
    if sorted(stored) != sorted(features):
        raise RuntimeError(f"the model reads features {list(stored)} but the VSSModel names {list(features)}")
    return stored


def check_finite(batch: F32, features: Sequence[str]) -> F32:
    """The batch (model order, named by `features`) if every reading is finite, else which one is not.
    Run in the executor: it reads every value."""
    finite = np.isfinite(batch)
    if finite.all():
        return batch
    bad = ~finite
    n, t, f = (int(i) for i in np.argwhere(bad)[0])
    value = batch[n, t, f]
    kind = "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    raise InvalidSeries(f"window {n}, step {t}, feature {features[f]!r} is {kind} ({int(bad.sum())} "
                        "non-finite readings in all): fill gaps (e.g. with the last reading) before sending")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(value: object) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:60]
