"""The figures the model cards quote: precision, recall and F1 per kind on balanced shares, the F1
threshold, seasonal-naive forecasts, MASE's scale and interval coverage."""

from __future__ import annotations

import numpy as np
import pytest

from vss_models.timeseries.datasets import NORMAL
from vss_models.timeseries.quality import (
    DetectionQuality,
    best_f1_threshold,
    detection_by_kind,
    forecast_quality,
    in_sample_scale,
    normal_shares,
    seasonal_naive,
)


def test_precision_recall_and_f1_count_hits_false_alarms_and_misses() -> None:
    truth = np.array([True, True, True, False, False])
    predicted = np.array([True, True, False, True, False])
    q = DetectionQuality.of(truth, predicted)
    assert (q.precision, q.recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert q.f1 == pytest.approx(2 / 3)


def test_each_kind_is_scored_with_its_own_equal_share_of_the_normal_windows() -> None:
    kinds = np.array([0, 0, 1, 1] + [NORMAL] * 4)
    predicted = np.array([True, True, False, True, True, False, False, False])  # one false alarm, first share
    quality = detection_by_kind(kinds, predicted, names=("a", "b"))
    assert [len(s) for s in normal_shares(kinds, 2)] == [2, 2]
    assert quality["a"].precision == pytest.approx(2 / 3) and quality["a"].recall == 1.0
    assert quality["b"].precision == 1.0 and quality["b"].recall == 0.5
    assert quality["overall"].windows == 8


def test_the_best_f1_threshold_separates_separable_scores() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.1], np.float32)
    truth = np.array([True, True, False, False, False])
    threshold = best_f1_threshold(scores, truth)
    assert 0.3 < threshold < 0.8


def test_seasonal_naive_forecasts_the_reading_one_day_earlier() -> None:
    lookback = np.arange(24, dtype=np.float32)[None, :, None]
    np.testing.assert_array_equal(seasonal_naive(lookback, 6)[0, :, 0], np.arange(6))


def test_mase_scale_is_the_in_sample_one_day_back_error() -> None:
    stream = np.tile(np.array([0.0, 2.0], np.float32), 24)[None, :, None]  # period-24 repeats exactly...
    stream[0, 24:, 0] += 1.0  # ...shifted by one after a day
    assert in_sample_scale(stream)[0] == pytest.approx(1.0)


def test_coverage_counts_targets_inside_their_interval() -> None:
    lookback = np.zeros((4, 24, 1), np.float32)
    future = np.array([0.0, 1.0, 2.0, 3.0], np.float32).reshape(4, 1, 1)
    predicted = np.full_like(future, 1.0)
    q = forecast_quality(lookback, future, predicted, predicted - 1.5, predicted + 1.5, 0.9, np.ones(1))
    assert q.coverage == pytest.approx(0.75)
    assert q.mase == pytest.approx(1.0) and q.seasonal_naive_mae == pytest.approx(1.5)
