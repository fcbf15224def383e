"""Injected anomalies: each kind changes what its label says, where its label says, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from vss_models.timeseries.anomalies import AnomalyKind, inject
from vss_models.timeseries.datasets import KINDS, NORMAL, labelled_windows
from vss_models.timeseries.sensors import ANOMALY_SCALE, HUMIDITY, POWER, VIBRATION, WEEK, Site, synthesize


def window(seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return synthesize(Site.draw(rng), WEEK, rng).window(10, 100), rng


@pytest.mark.parametrize("kind", [k for k in AnomalyKind if k is not AnomalyKind.BROKEN_CORRELATION])
def test_an_anomaly_changes_only_its_feature_and_span(kind: AnomalyKind) -> None:
    for seed in range(20):
        clean, rng = window(seed)
        changed, label = inject(clean, kind, rng)
        diff = changed.values != clean.values
        assert diff[label.start:label.end, label.feature].any() or kind is AnomalyKind.STUCK
        outside = diff.copy()
        outside[label.start:label.end, label.feature] = False
        assert not outside.any()
        assert 5 <= label.start < label.end <= 100


def test_a_stuck_sensor_repeats_one_reading_for_its_whole_span() -> None:
    for seed in range(10):
        clean, rng = window(seed)
        changed, label = inject(clean, AnomalyKind.STUCK, rng)
        span = changed.values[label.start:label.end, label.feature]
        assert label.end - label.start >= 15 and np.all(span == span[0])


def test_a_spike_is_several_anomaly_units_tall() -> None:
    clean, rng = window(3)
    changed, label = inject(clean, AnomalyKind.SPIKE, rng)
    jump = np.abs(changed.values - clean.values)[label.start, label.feature]
    assert jump >= 6 * ANOMALY_SCALE[label.feature] - 1e-9


def test_a_broken_correlation_decouples_a_dependent_feature_visibly() -> None:
    for seed in range(20):
        clean, rng = window(seed)
        changed, label = inject(clean, AnomalyKind.BROKEN_CORRELATION, rng)
        assert label.feature in (HUMIDITY, POWER, VIBRATION)
        diff = np.abs(changed.values - clean.values)[label.start:label.end, label.feature]
        assert diff.mean() > 2 * ANOMALY_SCALE[label.feature] / 4


def test_labelled_windows_hold_the_asked_number_of_each_kind_and_of_normal_ones() -> None:
    windows = labelled_windows(np.random.default_rng(0), per_kind=3, normal=5, window=100)
    assert windows.values.shape == (3 * len(KINDS) + 5, 100, 5)
    assert [int((windows.kinds == k).sum()) for k in range(len(KINDS))] == [3] * len(KINDS)
    assert int((windows.kinds == NORMAL).sum()) == 5
    assert not np.isnan(windows.values).any()
