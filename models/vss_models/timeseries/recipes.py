"""What the time-series build makes and how (data sizes, network shapes, epochs, file names), and the
data each recipe draws: plain dataclasses and numpy, so evaluation and serving need no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vss_models.timeseries.datasets import ForecastPairs, Split, forecast_pairs, rng_for, sensor_streams
from vss_models.timeseries.quality import in_sample_scale
from vss_models.timeseries.sensors import WEEK

ANOMALY_FILE = "anomaly.onnx"
FORECAST_FILES = {"lstm": "forecast-lstm.onnx", "transformer": "forecast-transformer.onnx"}
TEST_PER_KIND = 200
TEST_NORMAL = 1200
INTERVAL_LEVELS: tuple[float, ...] = tuple(round(0.50 + 0.01 * i, 2) for i in range(50))


@dataclass(frozen=True)
class AutoencoderShape:
    window: int = 100
    features: int = 5
    patch: int = 4
    hidden: int = 64
    latent: int = 3  # per patch


@dataclass(frozen=True)
class TrainingRun:
    epochs: int
    batch: int = 128
    learning_rate: float = 3e-3
    seed: int = 0


@dataclass(frozen=True)
class AnomalyConfig:
    window: int = 100
    train_windows: int = 3000
    calibration_windows: int = 1200
    validation_per_kind: int = 150
    validation_normal: int = 900
    shape: AutoencoderShape = field(default_factory=AutoencoderShape)
    training: TrainingRun = field(default_factory=lambda: TrainingRun(epochs=30))
    trees: int = 100
    # Severity edges: these quantiles of the evidence of the validation anomalies that were caught.
    severity_quantiles: tuple[float, float, float] = (0.5, 0.8, 0.95)
    # A feature is named as affected when its evidence is beyond normal and within this many log units
    # of the strongest feature's.
    affected_margin: float = 1.5
    seed: int = 0

    @classmethod
    def quick(cls) -> AnomalyConfig:
        """Seconds, not minutes: for tests and CI, not for quality."""
        return cls(train_windows=300, calibration_windows=200, validation_per_kind=20, validation_normal=120,
                   shape=AutoencoderShape(hidden=16), training=TrainingRun(epochs=2), trees=10)


@dataclass(frozen=True)
class ForecastConfig:
    lookback: int = 24
    horizon: int = 6
    train_sites: int = 48
    calibration_sites: int = 32
    test_sites: int = 32
    weeks: int = 4
    train_stride: int = 2  # every other window: neighbours overlap in 23 of 24 readings anyway
    stride: int = 1  # calibration and test windows
    epochs: int = 10
    batch: int = 256
    learning_rate: float = 3e-3
    hidden: int = 64  # LSTM state; the Transformer's model width is half of it
    seed: int = 0

    @property
    def stream_length(self) -> int:
        return self.weeks * WEEK

    @classmethod
    def quick(cls) -> ForecastConfig:
        """Seconds, not minutes: for tests and CI, not for quality."""
        return cls(train_sites=4, calibration_sites=3, test_sites=3, weeks=1, train_stride=3, stride=3, epochs=1,
                   hidden=16)


@dataclass(frozen=True)
class ForecastData:
    train: ForecastPairs
    calibration: ForecastPairs
    test: ForecastPairs
    scale: np.ndarray  # MASE's in-sample scale per feature, from the training streams


def forecast_data(config: ForecastConfig) -> ForecastData:
    streams = sensor_streams(rng_for(config.seed, Split.TRAIN, 10), config.train_sites, config.stream_length)
    calibration = sensor_streams(rng_for(config.seed, Split.VALIDATION, 10), config.calibration_sites,
                                 config.stream_length)
    test = sensor_streams(rng_for(config.seed, Split.TEST, 10), config.test_sites, config.stream_length)
    pairs = [forecast_pairs(s, config.lookback, config.horizon, stride)
             for s, stride in ((streams, config.train_stride), (calibration, config.stride), (test, config.stride))]
    return ForecastData(pairs[0], pairs[1], pairs[2], in_sample_scale(streams))
