"""Anomaly detection on sensor windows: the request checks of `series.py`, then the verdict from the
detector graph's outputs and the calibration stored in its metadata (see
`models/vss_models/timeseries/anomaly_detector.py`).

Request: v2 `series` FP32 [N, window, F] or v1 instances (see `series.py`).
Response, per window:
  v1 `{"is_anomaly", "anomaly_score", "confidence", "severity", "affected_features", "feature_scores",
       "threshold", "processing_time"}`;
  v2 `is_anomaly` BOOL [N], `anomaly_score` FP32 [N], `confidence` FP32 [N], `severity` BYTES [N],
     `affected_features` BYTES [N] (comma-separated names, strongest first; "" when none),
     `feature_scores` FP32 [N, F] (the VSSModel's feature order).
`anomaly_score` is the calibrated probability that the window holds an anomaly; `confidence` the
probability that the verdict is right (the score, or one minus it); `severity` is "none" for a normal
window and low/medium/high/critical by the calibrated bands of the evidence otherwise; a feature is
affected when its evidence is beyond what normal windows show and close to the strongest feature's."""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from vss_api.v2 import Array
from vss_api.vssmodel import AnomalyParams
from vss_transformers.series import F32, SeriesLayout, SeriesRequests, SeriesTask, model_features, series_input

SEVERITIES = ("low", "medium", "high", "critical")
OUTPUTS = ("anomaly_score", "evidence", "feature_evidence")


@dataclass(frozen=True)
class Calibration:
    """What the detector's metadata says about its scores."""

    threshold: float
    severity_edges: tuple[float, float, float]
    affected_margin: float

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], threshold: float | None) -> Calibration:
        try:
            edges = tuple(float(e) for e in json.loads(meta["vss.severity_edges"]))
            calibrated = float(meta["vss.threshold"])
            margin = float(meta.get("vss.affected_margin", "1.5"))
        except (KeyError, ValueError, TypeError) as exc:
            raise RuntimeError(f"the anomaly model's metadata lacks its calibration ({exc}); "
                               "build it with `vss models build`") from exc
        if len(edges) != 3 or list(edges) != sorted(edges):
            raise RuntimeError(f"vss.severity_edges must be three rising numbers, got {edges}")
        return cls(calibrated if threshold is None else threshold, (edges[0], edges[1], edges[2]), margin)


@dataclass(frozen=True)
class AnomalyVerdict:
    is_anomaly: bool
    anomaly_score: float
    confidence: float
    severity: str
    affected_features: tuple[str, ...]
    feature_scores: F32  # [F] in the VSSModel's order


def severity_of(evidence: float, edges: Sequence[float]) -> str:
    return SEVERITIES[bisect.bisect_right(list(edges), evidence)]


_SEVERITY_BYTES = np.array([b"none", *(s.encode() for s in SEVERITIES)], dtype=object)


@dataclass(frozen=True, eq=False)
class Verdicts(Sequence[AnomalyVerdict]):
    """The verdicts of a batch of windows as arrays, one row per window: the v2 tensors are these arrays, with
    no per-window objects on the way (a 64-window request); indexing gives one window's `AnomalyVerdict`."""

    is_anomaly: npt.NDArray[np.bool_]  # [N]
    anomaly_score: F32  # [N]
    confidence: F32  # [N]
    severity: npt.NDArray[np.object_]  # [N] bytes: b"none" or a band
    affected: tuple[tuple[str, ...], ...]  # [N] feature names, strongest first
    affected_text: npt.NDArray[np.object_]  # [N] bytes: the same names comma-separated, b"" when none
    feature_scores: F32  # [N, F] in the VSSModel's order

    def __len__(self) -> int:
        return int(self.anomaly_score.shape[0])

    @overload
    def __getitem__(self, index: int) -> AnomalyVerdict: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[AnomalyVerdict]: ...

    def __getitem__(self, index: int | slice) -> AnomalyVerdict | Sequence[AnomalyVerdict]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        return AnomalyVerdict(is_anomaly=bool(self.is_anomaly[index]),
                              anomaly_score=float(self.anomaly_score[index]),
                              confidence=float(self.confidence[index]), severity=self.severity[index].decode(),
                              affected_features=self.affected[index], feature_scores=self.feature_scores[index])


def judge(scores: F32, evidence: F32, feature_evidence: F32, features: Sequence[str],
          calibration: Calibration) -> Verdicts:
    """Verdicts from the graph's outputs; `feature_evidence` [N, F] and `features` in the same order. Whole-batch
    array operations; only the flagged windows are looked at one by one, to name their affected features."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    per_feature = np.asarray(feature_evidence, dtype=np.float32)
    flagged = scores >= calibration.threshold
    confidence = np.where(flagged, scores, np.float32(1.0) - scores).astype(np.float32)
    bands = np.searchsorted(np.asarray(calibration.severity_edges, dtype=np.float64),
                            np.asarray(evidence, dtype=np.float32).reshape(-1).astype(np.float64), side="right")
    severity = _SEVERITY_BYTES[np.where(flagged, bands + 1, 0)]
    affected: list[tuple[str, ...]] = [()] * int(scores.shape[0])
    affected_text = np.full(scores.shape[0], b"", dtype=object)
    rows = np.flatnonzero(flagged)
    if rows.size:
        evidence_of = per_feature[rows]
        order = np.argsort(-evidence_of, axis=1, kind="stable")  # strongest first, ties in feature order
        # each reading against (strongest - margin) as a float32, as the scalar comparison of one row made it
        limit = (evidence_of.max(axis=1).astype(np.float64) - calibration.affected_margin).astype(np.float32)
        beyond = (evidence_of > 0) & (evidence_of >= limit[:, None])
        for row, ranked, kept in zip(rows.tolist(), order.tolist(), np.take_along_axis(beyond, order, 1).tolist(),
                                     strict=True):
            named = tuple(features[j] for j, keep in zip(ranked, kept, strict=True) if keep) or (features[ranked[0]],)
            affected[row] = named
            affected_text[row] = ",".join(named).encode()
    return Verdicts(is_anomaly=flagged, anomaly_score=scores, confidence=confidence, severity=severity,
                    affected=tuple(affected), affected_text=affected_text, feature_scores=per_feature)


def as_v2_tensors(verdicts: Sequence[AnomalyVerdict]) -> dict[str, npt.NDArray[np.generic]]:
    if isinstance(verdicts, Verdicts):
        return {"is_anomaly": verdicts.is_anomaly, "anomaly_score": verdicts.anomaly_score,
                "confidence": verdicts.confidence, "severity": verdicts.severity,
                "affected_features": verdicts.affected_text,
                "feature_scores": verdicts.feature_scores}
    return {
        "is_anomaly": np.array([v.is_anomaly for v in verdicts], dtype=np.bool_),
        "anomaly_score": np.array([v.anomaly_score for v in verdicts], dtype=np.float32),
        "confidence": np.array([v.confidence for v in verdicts], dtype=np.float32),
        "severity": np.array([v.severity.encode() for v in verdicts], dtype=object),
        "affected_features": np.array([",".join(v.affected_features).encode() for v in verdicts],
                                      dtype=object),
        "feature_scores": np.stack([v.feature_scores for v in verdicts]),
    }


def as_v1_result(verdict: AnomalyVerdict, features: Sequence[str], threshold: float,
                 seconds: float) -> dict[str, object]:
    return {
        "is_anomaly": verdict.is_anomaly,
        "anomaly_score": round(verdict.anomaly_score, 6),
        "confidence": round(verdict.confidence, 6),
        "severity": verdict.severity,
        "affected_features": list(verdict.affected_features),
        "feature_scores": {f: round(float(s), 4) for f, s in zip(features, verdict.feature_scores,
                                                                 strict=True)},
        "threshold": round(threshold, 6),
        "processing_time": round(seconds, 4),
    }


class AnomalyTask(SeriesTask[AnomalyVerdict]):
    name = "anomaly"

    def __init__(self, params: AnomalyParams) -> None:
        self.params = params
        self.features = tuple(params.features)
        self.requests = SeriesRequests(SeriesLayout(self.features, params.window, "spec.transformer.anomaly"
                                                    ".window", params.max_batch))
        self.calibration: Calibration | None = None

    def configure(self, config: Mapping[str, Any]) -> None:
        self.input_name = series_input(config, self.params.window, len(self.features),
                                       "spec.transformer.anomaly.window")
        outputs = {str(o["name"]) for o in config.get("outputs") or []}
        if not set(OUTPUTS) <= outputs:
            raise RuntimeError(f"an anomaly model outputs {list(OUTPUTS)}, the predictor reports {sorted(outputs)}")
        meta = {str(k): str(v) for k, v in ((config.get("parameters") or {}).get("metadata") or {}).items()}
        order = model_features(meta, self.features)
        self.requests = SeriesRequests(SeriesLayout(self.features, self.params.window,
                                                    "spec.transformer.anomaly.window", self.params.max_batch,
                                                    order))
        self.calibration = Calibration.from_metadata(meta, self.params.threshold)

    def postprocess(self, outputs: Mapping[str, Array], context: None) -> Verdicts:
        assert self.calibration is not None, "configure() runs before serving"
        per_feature = outputs["feature_evidence"].astype(np.float32)[:, self.requests.layout.to_client]
        return judge(outputs["anomaly_score"].astype(np.float32).reshape(-1),
                     outputs["evidence"].astype(np.float32).reshape(-1), per_feature, self.features,
                     self.calibration)

    def v2_outputs(self, results: Sequence[AnomalyVerdict]) -> dict[str, npt.NDArray[np.generic]]:
        return as_v2_tensors(results)

    def v1_result(self, result: AnomalyVerdict, seconds: float) -> dict[str, object]:
        assert self.calibration is not None
        return as_v1_result(result, self.features, self.calibration.threshold, seconds)

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "is_anomaly", "datatype": "BOOL", "shape": [-1]},
                {"name": "anomaly_score", "datatype": "FP32", "shape": [-1]},
                {"name": "confidence", "datatype": "FP32", "shape": [-1]},
                {"name": "severity", "datatype": "BYTES", "shape": [-1]},
                {"name": "affected_features", "datatype": "BYTES", "shape": [-1]},
                {"name": "feature_scores", "datatype": "FP32", "shape": [-1, len(self.features)]}]
