"""Labelled anomalies injected into sensor signals, six kinds of what goes wrong with real sensors:
a spike, a level shift, a drift, a stuck sensor, a burst of variance and a broken correlation between
two features that normally move together. Sizes are in units of each sensor's `ANOMALY_SCALE`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from vss_models.timeseries.sensors import (
    ANOMALY_SCALE,
    HUMIDITY,
    NOISE,
    POWER,
    VIBRATION,
    Signals,
)


class AnomalyKind(StrEnum):
    SPIKE = "spike"
    LEVEL_SHIFT = "level_shift"
    DRIFT = "drift"
    STUCK = "stuck"
    VARIANCE_BURST = "variance_burst"
    BROKEN_CORRELATION = "broken_correlation"


@dataclass(frozen=True)
class Injected:
    """Where an anomaly is: `kind` on `feature` over samples [start, end)."""

    kind: AnomalyKind
    feature: int
    start: int
    end: int


def _span(rng: np.random.Generator, length: int, low: int, high: int, margin: int) -> tuple[int, int]:
    duration = int(rng.integers(low, high + 1))
    start = int(rng.integers(margin, max(margin + 1, length - duration - margin)))
    return start, min(length, start + duration)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def inject(
    signals: Signals, kind: AnomalyKind, rng: np.random.Generator, *, margin: int = 5
) -> tuple[Signals, Injected]:
    """A copy of `signals` with one anomaly of `kind`, at least `margin` samples inside the window."""
    values = signals.values.copy()
    length, n_features = values.shape
    feature = int(rng.integers(0, n_features))
    scale = float(ANOMALY_SCALE[feature])
    if kind is AnomalyKind.SPIKE:
        start, end = _span(rng, length, 1, 3, margin)
        values[start:end, feature] += _sign(rng) * rng.uniform(6, 10) * scale
    elif kind is AnomalyKind.LEVEL_SHIFT:
        start, end = _span(rng, length, 25, 70, margin)
        end = length if rng.random() < 0.5 else end  # half of them last past the window
        values[start:end, feature] += _sign(rng) * rng.uniform(4, 7) * scale
    elif kind is AnomalyKind.DRIFT:
        start, end = _span(rng, length, 30, 60, margin)
        ramp = np.linspace(0.0, 1.0, end - start) * rng.uniform(6, 10) * scale * _sign(rng)
        values[start:end, feature] += ramp
    elif kind is AnomalyKind.STUCK:
        start, end = _span(rng, length, 15, 40, margin)
        values[start:end, feature] = values[start, feature]
    elif kind is AnomalyKind.VARIANCE_BURST:
        start, end = _span(rng, length, 12, 30, margin)
        extra = rng.uniform(2.5, 4.0) * scale
        values[start:end, feature] += rng.normal(0.0, extra, end - start)
    elif kind is AnomalyKind.BROKEN_CORRELATION:
        start, end = _span(rng, length, 30, 60, margin)
        feature = _decouple(signals, values, start, end, rng)
    else:  # pragma: no cover - the enum is exhaustive
        raise ValueError(kind)
    return replace(signals, values=values), Injected(kind, feature, start, end)


def _decouple(signals: Signals, values: np.ndarray, start: int, end: int, rng: np.random.Generator) -> int:
    """Humidity that rises with temperature instead of falling, or power (or vibration) that follows
    another line's load, half a day off, while its partner keeps following the real one: each feature
    alone stays plausible. A candidate that would hardly differ (idle machines on a Sunday follow any
    load) is passed over, so that every label marks something there is to see."""
    site, n = signals.site, end - start
    noise = rng.normal(0.0, 1.0, n)
    other = np.roll(signals.load, HALF_DAY)[start:end]
    rebuilt = {
        HUMIDITY: site.humidity_base + site.humidity_per_degree * signals.temperature_swing[start:end],
        POWER: site.power_base + site.power_per_load * other,
        VIBRATION: site.vibration_base + site.vibration_per_load * other,
    }
    order = [int(f) for f in rng.permutation(list(rebuilt))]
    visible = [f for f in order if np.mean(np.abs(rebuilt[f] - values[start:end, f])) > 4 * NOISE[f]]
    feature = visible[0] if visible else HUMIDITY
    values[start:end, feature] = rebuilt[feature] + noise * NOISE[feature]
    return feature


HALF_DAY = 12
