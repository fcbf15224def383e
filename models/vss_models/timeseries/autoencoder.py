"""The neural half of the anomaly detector: an LSTM autoencoder over windows of sensor readings, and the
evidence it yields, computed inside the exported graph so that the predictor serves raw FP32 windows.

The autoencoder reads a window as patches of a few hours (an LSTM over 25 patches instead of 100 steps:
four times cheaper, and a bottleneck in time as well as across features) and squeezes each patch through
a few latent numbers, so it can rebuild the normal daily, weekly and load patterns and the way sensors
move together, but not a spike, a jump, a frozen reading or a sensor that stopped following its partner.

Evidence per feature, from the reconstruction residual scaled by what normal windows leave at each
position (the window's edges are harder to rebuild than its middle): the mean square, the peak, the
largest 8-step mean and mean square, the same over 24 steps, and the longest run of identical readings
(a stuck sensor can sit exactly on the curve). Steps where every sensor repeats its last reading are
outages the client filled in: they carry no information and are left out. Each evidence is divided by
its 99.5th percentile over normal validation windows, so 1.0 means "as far as normal windows go"."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from vss_models.timeseries.recipes import AutoencoderShape, TrainingRun
from vss_models.timeseries.sensors import F32

EVIDENCE = ("mean_square", "peak", "mean_8", "energy_8", "mean_24", "energy_24", "frozen_run")
FROZEN_RUN = 12  # steps of identical readings that make a frozen-run evidence of 1
_SAME = 1e-6  # readings closer than this (in normalised units) count as the same reading


class LstmAutoencoder(nn.Module):
    """Bidirectional LSTM encoder over patches -> `latent` numbers per patch -> bidirectional LSTM
    decoder -> the patch again. Input and output are normalised windows [N, T, F]."""

    def __init__(self, shape: AutoencoderShape) -> None:
        super().__init__()
        if shape.window % shape.patch:
            raise ValueError(f"window {shape.window} is not a multiple of patch {shape.patch}")
        self.shape = shape
        width = shape.patch * shape.features
        self.encoder = nn.LSTM(width, shape.hidden, batch_first=True, bidirectional=True)
        self.to_latent = nn.Linear(2 * shape.hidden, shape.latent)
        self.decoder = nn.LSTM(shape.latent, shape.hidden, batch_first=True, bidirectional=True)
        self.to_patch = nn.Linear(2 * shape.hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        s = self.shape
        patches = x.reshape(-1, s.window // s.patch, s.patch * s.features)
        encoded, _ = self.encoder(patches)
        decoded, _ = self.decoder(self.to_latent(encoded))
        out: Tensor = self.to_patch(decoded).reshape(-1, s.window, s.features)
        return out


def centre(series: Tensor) -> Tensor:
    """Each window minus its own per-feature mean: the sites' levels differ, their shapes do not."""
    return series - series.mean(dim=1, keepdim=True)


def _running_mean(x: Tensor, k: int) -> Tensor:
    """Mean over every `k` consecutive steps of [N, T, F] -> [N, T-k+1, F]."""
    out: Tensor = functional.avg_pool1d(x.transpose(1, 2), k, stride=1).transpose(1, 2)
    return out


class WindowEvidence(nn.Module):
    """Raw windows [N, T, F] -> evidence [N, F, E] (see `EVIDENCE`), in units of the normal 99.5th
    percentile once `set_normal_limits` has been called."""

    autoencoder: LstmAutoencoder
    scale: Tensor
    residual_scale: Tensor
    normal_limit: Tensor

    def __init__(self, autoencoder: LstmAutoencoder, scale: F32, residual_scale: F32) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, np.float32)))
        self.register_buffer("residual_scale", torch.from_numpy(np.asarray(residual_scale, np.float32)))
        n_features = int(scale.shape[0])
        self.register_buffer("normal_limit", torch.ones(n_features, len(EVIDENCE)))

    def set_normal_limits(self, limits: F32) -> None:
        self.normal_limit.copy_(torch.from_numpy(np.asarray(limits, np.float32)))

    def forward(self, series: Tensor) -> Tensor:
        x = centre(series) / self.scale
        r = (x - self.autoencoder(x)) / self.residual_scale
        step = (x[:, 1:] - x[:, :-1]).abs() <= _SAME  # [N, T-1, F] reading repeated
        outage = step.all(dim=2, keepdim=True)  # every sensor repeated: a gap the client filled
        filled = torch.cat([torch.zeros_like(outage[:, :1]), outage], dim=1)
        # The first reading after a gap jumps to where the signal went meanwhile: leave it out too.
        filled = filled | torch.cat([torch.zeros_like(filled[:, :1]), filled[:, :-1]], dim=1)
        r = r.masked_fill(filled, 0.0)
        r2 = r * r
        frozen = (step & ~outage).float()
        evidence = torch.stack([
            r2.mean(dim=1),
            r.abs().amax(dim=1),
            _running_mean(r, 8).abs().amax(dim=1),
            _running_mean(r2, 8).amax(dim=1),
            _running_mean(r, 24).abs().amax(dim=1),
            _running_mean(r2, 24).amax(dim=1),
            _running_mean(frozen, FROZEN_RUN).amax(dim=1),
        ], dim=2)  # [N, F, E]
        out: Tensor = evidence / self.normal_limit
        return out


def feature_scale(windows: F32) -> F32:
    """Per-feature spread of the centred training windows: the unit the autoencoder works in."""
    centred = windows - windows.mean(axis=1, keepdims=True)
    scale: F32 = centred.reshape(-1, windows.shape[2]).std(axis=0).astype(np.float32)
    return scale


def train_autoencoder(windows: F32, shape: AutoencoderShape, run: TrainingRun,
                      log: bool = False) -> tuple[LstmAutoencoder, F32]:
    """An autoencoder fit to normal windows (mean squared error, one-cycle Adam), and its feature scale."""
    torch.manual_seed(run.seed)
    scale = feature_scale(windows)
    x = torch.from_numpy(((windows - windows.mean(axis=1, keepdims=True)) / scale).astype(np.float32))
    model = LstmAutoencoder(shape)
    optimiser = torch.optim.Adam(model.parameters(), lr=run.learning_rate)
    steps_per_epoch = math.ceil(len(x) / run.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, run.learning_rate,
                                                   total_steps=run.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(run.seed)
    model.train()
    for epoch in range(run.epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), run.batch):
            batch = x[order[i:i + run.batch]]
            optimiser.zero_grad()
            loss = functional.mse_loss(model(batch), batch)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        if log:
            print(f"autoencoder epoch {epoch + 1}/{run.epochs}: loss {total / len(x):.4f}", flush=True)
    model.eval()
    return model, scale


def residual_scale(model: LstmAutoencoder, scale: F32, windows: F32) -> F32:
    """Root mean square residual per (position, feature) of normal windows [T, F]."""
    with torch.no_grad():
        x = torch.from_numpy(((windows - windows.mean(axis=1, keepdims=True)) / scale).astype(np.float32))
        r = (x - model(x)).numpy()
    rms: F32 = np.sqrt((r * r).mean(axis=0)).astype(np.float32)
    return rms
