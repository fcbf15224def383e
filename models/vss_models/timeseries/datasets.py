"""Training, validation and test sets drawn from the sensor generator: anomaly windows with labels, and
lookback/horizon pairs for the forecasters. Each split draws from its own seed, so no site, noise or
anomaly of the test set was seen while training or calibrating."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from vss_models.timeseries.anomalies import AnomalyKind, inject
from vss_models.timeseries.sensors import F32, WEEK, Signals, Site, impute, observe, sensor_stream, synthesize

I64 = npt.NDArray[np.int64]
NORMAL = -1


class Split(IntEnum):
    TRAIN = 0
    VALIDATION = 1
    TEST = 2


def rng_for(seed: int, split: Split, purpose: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, int(split), purpose])


KINDS: tuple[AnomalyKind, ...] = tuple(AnomalyKind)


@dataclass(frozen=True)
class LabelledWindows:
    """Windows [N, T, F] as a client sends them (quantised, gaps filled), with what was injected:
    `kinds[i]` indexes `KINDS` (NORMAL for a clean window), `features[i]` the feature it was put on."""

    values: F32
    kinds: I64
    features: I64
    starts: I64
    ends: I64

    @property
    def is_anomaly(self) -> npt.NDArray[np.bool_]:
        flags: npt.NDArray[np.bool_] = self.kinds != NORMAL
        return flags

    def __len__(self) -> int:
        return int(self.values.shape[0])


def _window_sources(rng: np.random.Generator, count: int, window: int,
                    per_site: int = 8) -> Iterator[Signals]:
    """`count` clean signal windows, `per_site` of them from each synthetic site."""
    made = 0
    while made < count:
        signals = synthesize(Site.draw(rng), window + WEEK, rng)
        for _ in range(min(per_site, count - made)):
            start = int(rng.integers(0, len(signals) - window + 1))
            yield signals.window(start, window)
            made += 1


def normal_windows(rng: np.random.Generator, count: int, window: int) -> F32:
    """Clean windows [count, window, F]: what the autoencoder and the forest learn as normal."""
    return np.stack([impute(observe(s.values, rng)) for s in _window_sources(rng, count, window)])


def labelled_windows(rng: np.random.Generator, per_kind: int, normal: int, window: int) -> LabelledWindows:
    """`per_kind` windows with one anomaly of each kind, then `normal` clean ones."""
    plan = [k for k, _ in enumerate(KINDS) for _ in range(per_kind)] + [NORMAL] * normal
    values, kinds, features, starts, ends = [], [], [], [], []
    for kind, source in zip(plan, _window_sources(rng, len(plan), window), strict=True):
        feature, start, end = NORMAL, 0, 0
        if kind != NORMAL:
            source, injected = inject(source, KINDS[kind], rng)
            feature, start, end = injected.feature, injected.start, injected.end
        values.append(impute(observe(source.values, rng)))
        kinds.append(kind)
        features.append(feature)
        starts.append(start)
        ends.append(end)
    return LabelledWindows(np.stack(values), np.array(kinds), np.array(features), np.array(starts), np.array(ends))


@dataclass(frozen=True)
class ForecastPairs:
    """Lookback windows [N, L, F] and what followed them [N, H, F]."""

    lookback: F32
    future: F32

    def __len__(self) -> int:
        return int(self.lookback.shape[0])


def sensor_streams(rng: np.random.Generator, sites: int, length: int) -> F32:
    """`sites` clean, imputed streams [sites, length, F]."""
    return np.stack([sensor_stream(Site.draw(rng), length, rng) for _ in range(sites)])


def forecast_pairs(streams: F32, lookback: int, horizon: int, stride: int) -> ForecastPairs:
    """Every `stride`-th (lookback, horizon) pair of each stream [S, T, F]."""
    past, future = [], []
    for stream in streams:
        for start in range(0, stream.shape[0] - lookback - horizon + 1, stride):
            past.append(stream[start:start + lookback])
            future.append(stream[start + lookback:start + lookback + horizon])
    return ForecastPairs(np.stack(past), np.stack(future))
