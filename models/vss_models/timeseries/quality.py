"""How good the time-series models are, in plain numpy: anomaly precision, recall and F1 per injected
kind, and forecast MASE against the seasonal-naive forecast with the empirical coverage of intervals.

Per kind, the windows of that kind are scored together with an equally large, disjoint share of the
normal windows, so every kind is measured on a balanced set and its precision counts the false alarms
of its own share; "overall" is every window at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vss_models.timeseries.datasets import I64, KINDS, NORMAL
from vss_models.timeseries.sensors import DAY, F32

Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class DetectionQuality:
    windows: int
    anomalies: int
    precision: float
    recall: float
    f1: float

    @classmethod
    def of(cls, truth: Bools, predicted: Bools) -> DetectionQuality:
        tp = int(np.sum(truth & predicted))
        fp = int(np.sum(~truth & predicted))
        fn = int(np.sum(truth & ~predicted))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(int(truth.size), int(truth.sum()), precision, recall, f1)


def normal_shares(kinds: I64, n_kinds: int) -> list[npt.NDArray[np.int64]]:
    """The normal windows' indices dealt into `n_kinds` disjoint, equal shares."""
    normal = np.flatnonzero(kinds == NORMAL)
    size = len(normal) // n_kinds
    return [normal[i * size:(i + 1) * size] for i in range(n_kinds)]


KIND_NAMES: tuple[str, ...] = tuple(kind.value for kind in KINDS)


def detection_by_kind(kinds: I64, predicted: Bools,
                      names: Sequence[str] = KIND_NAMES) -> dict[str, DetectionQuality]:
    """Quality per kind (its windows plus its share of normal ones) and `overall` (every window)."""
    truth = kinds != NORMAL
    out: dict[str, DetectionQuality] = {}
    for k, (name, share) in enumerate(zip(names, normal_shares(kinds, len(names)), strict=True)):
        chosen = np.concatenate([np.flatnonzero(kinds == k), share])
        out[name] = DetectionQuality.of(truth[chosen], predicted[chosen])
    out["overall"] = DetectionQuality.of(truth, predicted)
    return out


def best_f1_threshold(scores: F32, truth: Bools) -> float:
    """The score threshold with the best F1 on these (validation) windows: midway between two scores."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    tp = np.cumsum(t)
    fp = np.cumsum(~t)
    f1 = 2 * tp / (tp + fp + t.sum())
    best = int(np.argmax(f1))
    below = float(s[best + 1]) if best + 1 < len(s) else float(s[best]) - 1.0
    return (float(s[best]) + below) / 2


@dataclass(frozen=True)
class ForecastQuality:
    mae: float
    seasonal_naive_mae: float
    mase: float  # MAE over the in-sample MAE of the one-day-back forecast (Hyndman's scaled error)
    relative_mae: float  # MAE over the seasonal-naive forecast's MAE on the same targets
    coverage: float  # share of targets inside the interval
    interval_level: float
    mean_interval_width: float


def seasonal_naive(lookback: F32, horizon: int, period: int = DAY) -> F32:
    """The reading one period before each target: lookback[..., L - period + h] for h < horizon."""
    start = lookback.shape[1] - period
    out: F32 = lookback[:, start:start + horizon]
    return out


def in_sample_scale(streams: F32, period: int = DAY) -> npt.NDArray[np.float64]:
    """MASE's scale per feature: mean |y_t - y_{t-period}| of the training streams [S, T, F], the
    in-sample error of the one-period-back forecast (Hyndman and Koehler's scaled error)."""
    if streams.shape[1] <= period:
        raise ValueError(f"the in-sample scale needs streams longer than the period {period}")
    diffs = np.abs(streams[:, period:] - streams[:, :-period])
    out: npt.NDArray[np.float64] = diffs.reshape(-1, streams.shape[2]).mean(axis=0).astype(np.float64)
    return out


def forecast_quality(lookback: F32, future: F32, predicted: F32, lower: F32, upper: F32, level: float,
                     scale: npt.NDArray[np.float64]) -> ForecastQuality:
    """Errors pooled over windows, horizon steps and features, each feature's error in its own scale."""
    naive = seasonal_naive(lookback, future.shape[1])
    error = np.abs(predicted - future) / scale
    naive_error = np.abs(naive - future) / scale
    inside = (future >= lower) & (future <= upper)
    return ForecastQuality(
        mae=float(error.mean()), seasonal_naive_mae=float(naive_error.mean()), mase=float(error.mean()),
        relative_mae=float(error.mean() / naive_error.mean()), coverage=float(inside.mean()),
        interval_level=level, mean_interval_width=float(((upper - lower) / scale).mean()))
