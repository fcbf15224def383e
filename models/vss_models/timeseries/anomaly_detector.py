"""The anomaly detector, built end to end: train the autoencoder on normal windows, set the normal limits
of its evidence and fit the IsolationForest on other normal windows, calibrate the fusion, the alarm
threshold and the severity bands on labelled validation windows, and export one ONNX graph carrying
that calibration in its metadata (the transformer reads it from the predictor's `/config`).

Graph: `series` FP32 [N, window, F] raw readings ->
  `anomaly_score` [N] probability that the window holds an anomaly (the calibrated fusion),
  `evidence` [N] log of how far beyond the normal 99.5th percentile the strongest evidence is,
  `feature_evidence` [N, F] the same per feature (> 0: beyond what normal windows show),
  `forest_score` [N] the IsolationForest's anomaly score."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import Tensor, nn

from vss_models.timeseries import forest as forests
from vss_models.timeseries.autoencoder import (
    EVIDENCE,
    FROZEN_RUN,
    WindowEvidence,
    residual_scale,
    train_autoencoder,
)
from vss_models.timeseries.datasets import LabelledWindows, Split, labelled_windows, normal_windows, rng_for
from vss_models.timeseries.onnx_export import export, run, session
from vss_models.timeseries.quality import best_f1_threshold
from vss_models.timeseries.recipes import AnomalyConfig
from vss_models.timeseries.sensors import F32, FEATURES

LOG_FLOOR = 1e-3  # evidence of 0 (no repeated readings at all) would be log(0)
NORMAL_QUANTILE = 0.995
SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class AnomalyCalibration:
    threshold: float
    severity_edges: tuple[float, float, float]
    fusion: forests.Fusion
    affected_margin: float


class AnomalyGraph(nn.Module):
    """The torch half of the served graph: the forest's input and the evidence outputs."""

    def __init__(self, evidence: WindowEvidence) -> None:
        super().__init__()
        self.window_evidence = evidence

    def forward(self, series: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_evidence = torch.log(self.window_evidence(series) + LOG_FLOOR)  # [N, F, E]
        feature_evidence = log_evidence.amax(dim=2)
        return log_evidence.flatten(1), feature_evidence.amax(dim=1), feature_evidence


def log_evidence(graph: AnomalyGraph, windows: F32, batch: int = 512) -> tuple[F32, F32, F32]:
    """(forest input [N, F*E], evidence [N], feature evidence [N, F]) in torch."""
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(windows), batch):
            parts.append(graph(torch.from_numpy(windows[start:start + batch])))
    flat, strongest, per_feature = (torch.cat([p[i] for p in parts]).numpy() for i in range(3))
    return flat, strongest, per_feature


def normal_limits(evidence: npt.NDArray[np.float32]) -> F32:
    """The 99.5th percentile of each evidence over normal windows [N, F, E] -> [F, E], floored so
    that an evidence normal windows never show (a frozen run) still has a finite unit."""
    limits = np.quantile(evidence, NORMAL_QUANTILE, axis=0)
    floor = np.full(limits.shape[1], 1e-6)
    floor[EVIDENCE.index("frozen_run")] = 2 / FROZEN_RUN
    out: F32 = np.maximum(limits, floor).astype(np.float32)
    return out


@dataclass
class BuiltDetector:
    model: onnx.ModelProto
    calibration: AnomalyCalibration
    validation: LabelledWindows
    seconds: float
    metadata: dict[str, str]


def metadata(config: AnomalyConfig, calibration: AnomalyCalibration) -> dict[str, str]:
    return {
        "vss.task": "anomaly",
        "vss.features": json.dumps(list(FEATURES)),
        "vss.window": str(config.window),
        "vss.threshold": repr(calibration.threshold),
        "vss.severity_edges": json.dumps(list(calibration.severity_edges)),
        "vss.severities": json.dumps(list(SEVERITIES)),
        "vss.affected_margin": repr(calibration.affected_margin),
        "vss.evidence": json.dumps(list(EVIDENCE)),
        "vss.fusion": json.dumps(asdict(calibration.fusion)),
        "vss.build": json.dumps({"seed": config.seed, "train_windows": config.train_windows,
                                 "epochs": config.training.epochs, "trees": config.trees,
                                 "autoencoder": asdict(config.shape)}),
    }


def build_detector(config: AnomalyConfig, *, log: bool = False) -> BuiltDetector:
    started = time.perf_counter()
    train = normal_windows(rng_for(config.seed, Split.TRAIN, 0), config.train_windows, config.window)
    calibration_set = normal_windows(rng_for(config.seed, Split.TRAIN, 1), config.calibration_windows,
                                     config.window)
    validation = labelled_windows(rng_for(config.seed, Split.VALIDATION), config.validation_per_kind,
                                  config.validation_normal, config.window)
    autoencoder, scale = train_autoencoder(train, config.shape, config.training, log=log)
    evidence = WindowEvidence(autoencoder, scale, residual_scale(autoencoder, scale, calibration_set)).eval()
    with torch.no_grad():
        raw = torch.cat([evidence(torch.from_numpy(calibration_set[i:i + 512]))
                         for i in range(0, len(calibration_set), 512)]).numpy()
    evidence.set_normal_limits(normal_limits(raw))
    graph = AnomalyGraph(evidence).eval()

    normal_flat, _, _ = log_evidence(graph, calibration_set)
    forest = forests.fit_forest(normal_flat, trees=config.trees, seed=config.seed)
    flat, strongest, _ = log_evidence(graph, validation.values)
    forest_score = forests.forest_anomaly_score(forest, flat)
    fusion = forests.fit_fusion(strongest, forest_score, validation.is_anomaly)
    probability = fusion.probability(strongest, forest_score)
    threshold = best_f1_threshold(probability, validation.is_anomaly)
    caught = strongest[validation.is_anomaly & (probability >= threshold)]
    edges = np.quantile(caught, config.severity_quantiles) if caught.size else np.array([1.0, 2.0, 3.0])
    calibration = AnomalyCalibration(threshold, (float(edges[0]), float(edges[1]), float(edges[2])), fusion,
                                     config.affected_margin)

    torch_part = export(graph, validation.values[:2], "series", ["forest_input", "evidence",
                                                                  "feature_evidence"])
    forest_part = forests.forest_graph(forest, flat.shape[1], "forest_input")
    meta = metadata(config, calibration)
    model = forests.fuse(torch_part, forest_part, fusion, meta)
    check_parity(model, validation.values[:64], strongest[:64], forest_score[:64], fusion)
    return BuiltDetector(model, calibration, validation, time.perf_counter() - started, meta)


def check_parity(model: onnx.ModelProto, windows: F32, strongest: F32, forest_score: F32,
                 fusion: forests.Fusion, tolerance: float = 1e-3) -> None:
    """The exported graph gives what torch and scikit-learn gave, or the build fails."""
    out = run(session(model), {"series": windows})
    expected = fusion.probability(strongest, forest_score)
    worst = {"evidence": float(np.abs(out["evidence"] - strongest).max()),
             "forest_score": float(np.abs(out["forest_score"] - forest_score).max()),
             "anomaly_score": float(np.abs(out["anomaly_score"] - expected).max())}
    if max(worst.values()) > tolerance:
        raise RuntimeError(f"exported anomaly graph differs from torch/scikit-learn: {worst}")


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    return {p.key: p.value for p in model.metadata_props}
