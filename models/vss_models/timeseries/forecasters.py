"""The forecasters: 24 hours of readings in, the next 6 hours of every sensor out, by an LSTM or by a
small Transformer encoder, each exported as ONNX with its split-conformal interval radii in metadata.

Both take raw readings `series` FP32 [N, lookback, F] and return `forecast` FP32 [N, horizon, F]: inside
the graph each window is expressed relative to its last reading and in units of the typical change over
the horizon, so sites of any level share one model. Intervals are split conformal (Vovk et al.; Lei et
al. 2018): on calibration windows the absolute error of each (horizon step, feature) is ranked, and the
radius for level a is its ceil((n + 1) a)-th smallest; they are stored for levels 0.50..0.99 so the
VSSModel chooses the level at serving time."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from torch.nn import functional

from vss_models.timeseries.datasets import ForecastPairs
from vss_models.timeseries.onnx_export import export, run, session, set_metadata
from vss_models.timeseries.quality import ForecastQuality, forecast_quality
from vss_models.timeseries.recipes import INTERVAL_LEVELS, ForecastConfig, ForecastData
from vss_models.timeseries.sensors import F32, FEATURES

Architecture = Literal["lstm", "transformer"]


class Standardise(nn.Module):
    """Readings relative to the window's last one, in units of the typical change over the horizon."""

    scale: Tensor

    def __init__(self, scale: F32) -> None:
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, np.float32)))

    def forward(self, series: Tensor) -> tuple[Tensor, Tensor]:
        anchor = series[:, -1:, :]
        return (series - anchor) / self.scale, anchor


class LstmForecaster(nn.Module):
    def __init__(self, features: int, horizon: int, hidden: int, scale: F32) -> None:
        super().__init__()
        self.standardise = Standardise(scale)
        self.horizon, self.features = horizon, features
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, horizon * features)

    def forward(self, series: Tensor) -> Tensor:
        x, anchor = self.standardise(series)
        out, _ = self.lstm(x)
        change = self.head(out[:, -1]).reshape(-1, self.horizon, self.features)
        forecast: Tensor = anchor + change * self.standardise.scale
        return forecast


class AttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention and feed-forward, written out so it exports to plain ONNX ops."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        n, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, w // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(w // self.heads), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(n, t, w)
        x = x + self.proj(attended)
        out: Tensor = x + self.ff(self.norm2(x))
        return out


class TransformerForecaster(nn.Module):
    def __init__(self, features: int, lookback: int, horizon: int, width: int, scale: F32,
                 layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.standardise = Standardise(scale)
        self.horizon, self.features = horizon, features
        self.embed = nn.Linear(features, width)
        self.position = nn.Parameter(torch.randn(1, lookback, width) * 0.02)
        self.blocks = nn.Sequential(*(AttentionBlock(width, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(lookback * width, horizon * features)

    def forward(self, series: Tensor) -> Tensor:
        x, anchor = self.standardise(series)
        h = self.norm(self.blocks(self.embed(x) + self.position))
        change = self.head(h.flatten(1)).reshape(-1, self.horizon, self.features)
        forecast: Tensor = anchor + change * self.standardise.scale
        return forecast


def change_scale(pairs: ForecastPairs) -> F32:
    """Per feature: the spread of (future reading - last lookback reading) over training pairs."""
    change = pairs.future - pairs.lookback[:, -1:, :]
    scale: F32 = change.reshape(-1, change.shape[2]).std(axis=0).astype(np.float32)
    return scale


def make_forecaster(architecture: Architecture, config: ForecastConfig, scale: F32) -> nn.Module:
    features = len(FEATURES)
    if architecture == "lstm":
        return LstmForecaster(features, config.horizon, config.hidden, scale)
    return TransformerForecaster(features, config.lookback, config.horizon, config.hidden // 2, scale)


def train_forecaster(architecture: Architecture, pairs: ForecastPairs, config: ForecastConfig,
                     *, log: bool = False) -> nn.Module:
    """Mean absolute error (the error MASE scores), one-cycle AdamW, in the standardised units."""
    torch.manual_seed(config.seed)
    scale = change_scale(pairs)
    model = make_forecaster(architecture, config, scale)
    x, y = torch.from_numpy(pairs.lookback), torch.from_numpy(pairs.future)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    steps = config.epochs * math.ceil(len(x) / config.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=steps)
    units = torch.from_numpy(scale)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), config.batch):
            index = order[i:i + config.batch]
            optimiser.zero_grad()
            loss = functional.l1_loss(model(x[index]) / units, y[index] / units)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        if log:
            print(f"{architecture} epoch {epoch + 1}/{config.epochs}: loss {total / len(x):.4f}", flush=True)
    return model.eval()


def conformal_radius(errors: F32, levels: tuple[float, ...] = INTERVAL_LEVELS) -> F32:
    """Split-conformal radius [L, H, F] from calibration absolute errors [n, H, F]: the
    ceil((n + 1) * level)-th smallest error of each (horizon step, feature)."""
    n = errors.shape[0]
    ordered = np.sort(errors, axis=0)
    ranks = [min(n, math.ceil((n + 1) * level)) - 1 for level in levels]
    radius: F32 = ordered[ranks].astype(np.float32)
    return radius


def radius_at(radius: F32, levels: tuple[float, ...], level: float) -> F32:
    """The radius for `level`, linear between the stored levels."""
    grid = np.asarray(levels)
    if not grid[0] <= level <= grid[-1]:
        raise ValueError(f"interval level {level} is outside the calibrated {grid[0]}..{grid[-1]}")
    upper = int(np.searchsorted(grid, level))
    if grid[upper] == level or upper == 0:
        out: F32 = radius[upper]
        return out
    w = (level - grid[upper - 1]) / (grid[upper] - grid[upper - 1])
    mixed: F32 = ((1 - w) * radius[upper - 1] + w * radius[upper]).astype(np.float32)
    return mixed


def predict(model: nn.Module, lookback: F32, batch: int = 2048) -> F32:
    with torch.no_grad():
        parts = [model(torch.from_numpy(lookback[i:i + batch])) for i in range(0, len(lookback), batch)]
    out: F32 = torch.cat(parts).numpy()
    return out


@dataclass
class BuiltForecaster:
    architecture: Architecture
    model: onnx.ModelProto
    radius: F32  # [L, H, F]
    quality: ForecastQuality  # in-process, on the test streams, at the 90 % level
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)


def build_forecaster(architecture: Architecture, config: ForecastConfig, data: ForecastData,
                     *, log: bool = False) -> BuiltForecaster:
    started = time.perf_counter()
    model = train_forecaster(architecture, data.train, config, log=log)
    errors = np.abs(predict(model, data.calibration.lookback) - data.calibration.future)
    radius = conformal_radius(errors)
    onnx_model = export(model, data.test.lookback[:2], "series", ["forecast"])
    meta = {
        "vss.task": "forecasting", "vss.architecture": architecture,
        "vss.features": json.dumps(list(FEATURES)), "vss.lookback": str(config.lookback),
        "vss.horizon": str(config.horizon), "vss.interval_levels": json.dumps(list(INTERVAL_LEVELS)),
        "vss.interval_radius": json.dumps(np.round(radius.astype(np.float64), 5).tolist()),
        "vss.build": json.dumps({k: v for k, v in asdict(config).items()}),
    }
    set_metadata(onnx_model, meta)
    predicted = run(session(onnx_model), {"series": data.test.lookback})["forecast"]
    torch_predicted = predict(model, data.test.lookback[:256])
    worst = float(np.abs(predicted[:256] - torch_predicted).max())
    if worst > 1e-3 * max(1.0, float(np.abs(torch_predicted).max())):
        raise RuntimeError(f"exported {architecture} forecaster differs from torch by {worst}")
    r90 = radius_at(np.round(radius, 5), INTERVAL_LEVELS, 0.9)
    quality = forecast_quality(data.test.lookback, data.test.future, predicted, predicted - r90,
                               predicted + r90, 0.9, data.scale)
    return BuiltForecaster(architecture, onnx_model, radius, quality, time.perf_counter() - started, meta)
