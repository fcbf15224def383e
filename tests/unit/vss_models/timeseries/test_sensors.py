"""The sensor generator: daily and weekly seasonality, features that move together as machine rooms do,
quantised readings with gaps, and gaps filled the way clients fill them."""

from __future__ import annotations

import numpy as np

from vss_models.timeseries.sensors import (
    DAY,
    FEATURES,
    HUMIDITY,
    POWER,
    QUANTUM,
    TEMPERATURE,
    VIBRATION,
    WEEK,
    Site,
    impute,
    observe,
    synthesize,
)


def signals(seed: int = 1, weeks: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return synthesize(Site.draw(rng), weeks * WEEK, rng).values


def _autocorrelation(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())


def test_temperature_and_power_repeat_daily_more_than_at_half_a_day() -> None:
    values = signals()
    for feature in (TEMPERATURE, POWER):
        assert _autocorrelation(values[:, feature], DAY) > 0.5
        assert _autocorrelation(values[:, feature], DAY) > _autocorrelation(values[:, feature], DAY // 2) + 0.3


def test_machines_idle_on_sundays_so_power_has_a_weekly_cycle() -> None:
    rng = np.random.default_rng(2)
    site = Site.draw(rng)
    s = synthesize(site, 4 * WEEK, rng)
    weekday = s.hour_of_week // DAY
    assert s.values[weekday == 6, POWER].mean() < s.values[weekday < 5, POWER].mean() - 5


def test_humidity_falls_as_temperature_rises_and_vibration_follows_power() -> None:
    values = signals(3)
    assert np.corrcoef(values[:, TEMPERATURE], values[:, HUMIDITY])[0, 1] < -0.8
    assert np.corrcoef(values[:, VIBRATION], values[:, POWER])[0, 1] > 0.8


def test_observed_readings_are_quantised_and_some_are_missing() -> None:
    rng = np.random.default_rng(4)
    observed = observe(signals(4), rng)
    present = observed[~np.isnan(observed).any(axis=1)]
    assert np.isnan(observed).any()
    assert np.allclose(present / QUANTUM, np.round(present / QUANTUM), atol=1e-3)
    assert observed.shape[1] == len(FEATURES)


def test_imputation_carries_the_last_reading_forward_and_the_first_one_back() -> None:
    column = np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan], np.float32)[:, None]
    np.testing.assert_array_equal(impute(column)[:, 0], [1.0, 1.0, 1.0, 1.0, 4.0, 4.0])
    assert not np.isnan(impute(observe(signals(5), np.random.default_rng(5)))).any()
