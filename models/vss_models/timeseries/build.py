"""Build the shipped time-series models into a model directory: `anomaly.onnx`, `forecast-lstm.onnx`,
`forecast-transformer.onnx`, and beside them `anomaly.manifest.json` / `forecasting.manifest.json` with
each file's sha256, the recipe, the calibration and the in-process held-out figures."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from vss_models.timeseries.anomaly_detector import build_detector
from vss_models.timeseries.datasets import LabelledWindows, Split, labelled_windows, rng_for
from vss_models.timeseries.forecasters import build_forecaster
from vss_models.timeseries.manifests import file_entry, write_json
from vss_models.timeseries.onnx_export import run, session
from vss_models.timeseries.quality import DetectionQuality, best_f1_threshold, detection_by_kind
from vss_models.timeseries.recipes import (
    ANOMALY_FILE,
    FORECAST_FILES,
    TEST_NORMAL,
    TEST_PER_KIND,
    AnomalyConfig,
    ForecastConfig,
    forecast_data,
)


@dataclass(frozen=True)
class TimeSeriesBuild:
    anomaly: Path
    forecasters: dict[str, Path]
    manifests: tuple[Path, Path]
    seconds: float


def ablation(model: onnx.ModelProto, validation: LabelledWindows, test: LabelledWindows) -> dict[str, float]:
    """Overall test F1 of each half alone and of the fusion, each with its best-F1 threshold on the
    validation windows: what the IsolationForest adds to the autoencoder's evidence."""
    graph = session(model)
    seen, fresh = run(graph, {"series": validation.values}), run(graph, {"series": test.values})
    out = {}
    for label, output in (("autoencoder_evidence", "evidence"), ("isolation_forest", "forest_score"),
                          ("fused", "anomaly_score")):
        threshold = best_f1_threshold(seen[output], validation.is_anomaly)
        out[label] = round(DetectionQuality.of(test.is_anomaly, fresh[output] >= threshold).f1, 4)
    return out


def build_anomaly(out: Path, config: AnomalyConfig, *, log: bool) -> Path:
    built = build_detector(config, log=log)
    path = out / ANOMALY_FILE
    onnx.save(built.model, str(path))
    test = labelled_windows(rng_for(config.seed, Split.TEST), TEST_PER_KIND, TEST_NORMAL, config.window)
    scores = run(session(built.model), {"series": test.values})["anomaly_score"]
    quality = detection_by_kind(test.kinds, scores >= built.calibration.threshold)
    write_json(out / "anomaly.manifest.json", {
        "files": {ANOMALY_FILE: file_entry(path)},
        "recipe": asdict(config),
        "calibration": asdict(built.calibration),
        "build_seconds": round(built.seconds, 1),
        "in_process_test": {k: asdict(q) for k, q in quality.items()},
        "test_f1_of_each_half": ablation(built.model, built.validation, test),
        "note": "held-out figures through the served path: anomaly.evaluation.json "
                "(python -m vss_models.timeseries evaluate)",
    })
    if log:
        print(f"anomaly: built in {built.seconds:.0f}s, in-process test F1 {quality['overall'].f1:.3f}",
              flush=True)
    return path


def build_forecasting(out: Path, config: ForecastConfig, *, log: bool) -> dict[str, Path]:
    data = forecast_data(config)
    paths: dict[str, Path] = {}
    report: dict[str, Any] = {}
    for architecture, name in FORECAST_FILES.items():
        built = build_forecaster("lstm" if architecture == "lstm" else "transformer", config, data, log=log)
        paths[architecture] = out / name
        onnx.save(built.model, str(paths[architecture]))
        report[architecture] = {"build_seconds": round(built.seconds, 1),
                                "in_process_test": asdict(built.quality)}
        if log:
            print(f"{architecture}: built in {built.seconds:.0f}s, MASE {built.quality.mase:.3f} "
                  f"(seasonal naive {built.quality.seasonal_naive_mae:.3f}), 90% coverage "
                  f"{built.quality.coverage:.3f}", flush=True)
    write_json(out / "forecasting.manifest.json", {
        "files": {FORECAST_FILES[a]: file_entry(p) for a, p in paths.items()},
        "recipe": asdict(config),
        "mase_scale": [round(float(v), 6) for v in np.asarray(data.scale)],
        "models": report,
        "note": "held-out figures through the served path: forecasting.evaluation.json "
                "(python -m vss_models.timeseries evaluate)",
    })
    return paths


def build(out: Path, *, quick: bool = False, log: bool = True, threads: int = 1) -> TimeSeriesBuild:
    """Both time-series tasks; `quick` trains for seconds (tests, CI), the default for a few minutes.
    One torch thread by default: these small LSTMs gain little from a second one, and on a shared
    machine a second spinning OpenMP thread cost 17x the CPU per batch (measured)."""
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    anomaly = build_anomaly(out, AnomalyConfig.quick() if quick else AnomalyConfig(), log=log)
    forecasters = build_forecasting(out, ForecastConfig.quick() if quick else ForecastConfig(), log=log)
    return TimeSeriesBuild(anomaly, forecasters, (out / "anomaly.manifest.json",
                                                  out / "forecasting.manifest.json"),
                           time.perf_counter() - started)
