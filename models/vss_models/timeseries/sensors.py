"""Synthetic multivariate sensor streams of one monitored machine room, hourly: temperature, humidity,
pressure, vibration and power, with daily and weekly seasonality, a slow trend, correlation between
features (humidity falls as temperature rises; vibration and power follow the machines' load), noise,
sensor quantisation and missing readings.

A stream is made in two steps so that anomalies can be injected between them (see `anomalies.py`):
`synthesize` draws the continuous signals and the drivers they were built from, `observe` turns them
into what a data logger stores (quantised, with gaps) and `impute` fills the gaps the way the serving
clients are expected to (last observation carried forward) before a window is sent."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

FEATURES: Final = ("temperature", "humidity", "pressure", "vibration", "power")
UNITS: Final = ("°C", "%RH", "hPa", "mm/s", "kW")
DAY: Final = 24  # samples per day (hourly)
WEEK: Final = 7 * DAY
# Reading resolution of each sensor: a logger stores 21.3 °C, not 21.2871 °C.
QUANTUM: Final = np.array([0.1, 0.1, 0.1, 0.01, 0.1])
# White measurement noise of each sensor, in its unit.
NOISE: Final = np.array([0.2, 0.8, 0.15, 0.06, 0.6])
# The size an injected anomaly is measured in, per sensor: about one standard deviation of its hour-to-hour
# variability (measurement noise and the wander of what drives it).
ANOMALY_SCALE: Final = np.array([0.5, 1.5, 0.5, 0.16, 3.0])

HUMIDITY, PRESSURE, VIBRATION, POWER = 1, 2, 3, 4
TEMPERATURE = 0


@dataclass(frozen=True)
class Site:
    """One machine room: the constants its signals are built from."""

    temperature_base: float
    temperature_amplitude: float
    temperature_trend_per_week: float
    humidity_base: float
    humidity_per_degree: float
    pressure_base: float
    vibration_base: float
    vibration_per_load: float
    power_base: float
    power_per_load: float
    start_hour: int  # hour of the week the stream starts at, so windows start on any weekday/hour

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Site:
        return cls(
            temperature_base=float(rng.uniform(16, 26)),
            temperature_amplitude=float(rng.uniform(1.5, 4.0)),
            temperature_trend_per_week=float(rng.uniform(-0.4, 0.4)),
            humidity_base=float(rng.uniform(40, 60)),
            humidity_per_degree=float(rng.uniform(1.5, 3.0)),
            pressure_base=float(rng.uniform(1005, 1022)),
            vibration_base=float(rng.uniform(0.2, 0.6)),
            vibration_per_load=float(rng.uniform(1.2, 2.4)),
            power_base=float(rng.uniform(3, 8)),
            power_per_load=float(rng.uniform(25, 45)),
            start_hour=int(rng.integers(0, WEEK)),
        )


@dataclass(frozen=True)
class Signals:
    """Continuous signals [T, F] before quantisation, and the drivers they follow, kept so that an
    anomaly can rebuild a feature from the wrong driver (a broken correlation)."""

    site: Site
    values: F64  # [T, F]
    load: F64  # [T] machine load, 0..1
    temperature_swing: F64  # [T] temperature minus its base: what humidity answers to
    hour_of_week: npt.NDArray[np.int64]  # [T]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def window(self, start: int, length: int) -> Signals:
        end = start + length
        return replace(
            self,
            values=self.values[start:end].copy(),
            load=self.load[start:end].copy(),
            temperature_swing=self.temperature_swing[start:end].copy(),
            hour_of_week=self.hour_of_week[start:end].copy(),
        )


def ar1(rng: np.random.Generator, length: int, phi: float, sigma: float) -> F64:
    """A stationary AR(1) process: slow wander that a window cannot predict exactly."""
    shocks = rng.normal(0.0, sigma, length)
    out = np.empty(length)
    out[0] = shocks[0] / np.sqrt(1 - phi * phi)
    for t in range(1, length):
        out[t] = phi * out[t - 1] + shocks[t]
    return out


def _bump(x: F64, rise: float, fall: float, sharpness: float = 1.2) -> F64:
    up = 1 / (1 + np.exp(-(x - rise) * sharpness))
    down = 1 / (1 + np.exp(-(fall - x) * sharpness))
    result: F64 = up * down
    return result


def machine_load(hour_of_week: npt.NDArray[np.int64], wander: F64) -> F64:
    """Shifts on weekdays 06-22 h with a lunch dip, a light Saturday shift, idle Sundays."""
    hour = (hour_of_week % DAY).astype(np.float64)
    weekday = hour_of_week // DAY  # 0 = Monday
    shift = _bump(hour, 6.0, 22.0) * (1 - 0.25 * _bump(hour, 12.0, 13.5, 2.5))
    level = np.where(weekday < 5, 0.85, np.where(weekday == 5, 0.4, 0.05))
    load: F64 = np.clip(0.1 + level * shift + wander, 0.0, 1.0)
    return load


def synthesize(site: Site, length: int, rng: np.random.Generator) -> Signals:
    """Continuous signals of `length` hourly samples for `site`."""
    hour_of_week = (site.start_hour + np.arange(length, dtype=np.int64)) % WEEK
    t = np.arange(length, dtype=np.float64)
    hour = (hour_of_week % DAY).astype(np.float64)
    load = machine_load(hour_of_week, ar1(rng, length, 0.9, 0.025))
    weekly = 0.6 * np.cos(2 * np.pi * (hour_of_week - 4 * DAY) / WEEK)  # warmer late in the week
    swing = (
        site.temperature_amplitude * np.sin(2 * np.pi * (hour - 9) / DAY)
        + weekly
        + 1.5 * load
        + site.temperature_trend_per_week * t / WEEK
        + ar1(rng, length, 0.95, 0.12)
    )
    values = np.empty((length, len(FEATURES)))
    values[:, TEMPERATURE] = site.temperature_base + swing
    values[:, HUMIDITY] = site.humidity_base - site.humidity_per_degree * swing
    values[:, PRESSURE] = site.pressure_base + ar1(rng, length, 0.985, 0.25) + 0.6 * np.sin(2 * np.pi * hour / 12)
    values[:, VIBRATION] = site.vibration_base + site.vibration_per_load * load
    values[:, POWER] = site.power_base + site.power_per_load * load
    values += rng.normal(0.0, 1.0, values.shape) * NOISE
    values[:, HUMIDITY] = np.clip(values[:, HUMIDITY], 5, 100)
    values[:, VIBRATION] = np.maximum(values[:, VIBRATION], 0.0)
    return Signals(site, values, load, swing, hour_of_week)


def observe(values: F64, rng: np.random.Generator, *, missing_rate: float = 0.004, outage_rate: float = 0.002) -> F32:
    """What the logger stores: readings rounded to each sensor's resolution, single readings lost
    (`missing_rate` per reading) and outages where every sensor is lost for 2-6 hours."""
    quantised = np.round(values / QUANTUM) * QUANTUM
    missing = rng.random(values.shape) < missing_rate
    for start in np.flatnonzero(rng.random(values.shape[0]) < outage_rate):
        missing[start:start + int(rng.integers(2, 7))] = True
    out: F32 = quantised.astype(np.float32)
    out[missing] = np.nan
    return out


def impute(values: F32) -> F32:
    """Missing readings (NaN) replaced by the last one seen, leading ones by the first one seen:
    what a client does before it sends a window, since the served models refuse NaN."""
    out = values.copy()
    for f in range(out.shape[1]):
        column = out[:, f]
        seen = ~np.isnan(column)
        if not seen.any():
            column[:] = 0.0
            continue
        index = np.where(seen, np.arange(column.size), 0)
        np.maximum.accumulate(index, out=index)
        first = int(np.argmax(seen))
        index[:first] = first
        out[:, f] = column[index]
    return out


def sensor_stream(site: Site, length: int, rng: np.random.Generator) -> F32:
    """A clean, imputed stream [length, F] of one site: the forecasters' data."""
    return impute(observe(synthesize(site, length, rng).values, rng))
