"""Held-out figures of the time-series models, measured through the served path (`served.py`): anomaly
precision/recall/F1 per injected kind, forecast MASE against seasonal-naive and interval coverage, the
served-vs-in-process parity and the throughput at concurrency 8. Written as JSON beside the models; the
model cards quote them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic

import numpy as np

from vss_api.vssmodel import VSSModel
from vss_models.timeseries.datasets import KINDS, NORMAL, Split, labelled_windows, rng_for
from vss_models.timeseries.quality import detection_by_kind, forecast_quality
from vss_models.timeseries.recipes import (
    ANOMALY_FILE,
    FORECAST_FILES,
    TEST_NORMAL,
    TEST_PER_KIND,
    AnomalyConfig,
    ForecastConfig,
    forecast_data,
)
from vss_models.timeseries.sensors import F32, FEATURES
from vss_models.timeseries.served import infer_all, parity, scratch_folder, throughput, vss_run, with_version
from vss_predictors.onnx_runtime import OnnxRuntime
from vss_transformers.anomaly import AnomalyTask
from vss_transformers.forecasting import ForecastingTask
from vss_transformers.series import SeriesTask
from vss_transformers.tasks import Result

ANOMALY_OUTPUTS = ("is_anomaly", "anomaly_score", "confidence", "severity", "affected_features",
                   "feature_scores")
FORECAST_OUTPUTS = ("predictions", "lower", "upper", "forecast_horizon")
PARITY_WINDOWS = 256


@dataclass
class InProcess(Generic[Result]):
    """The served pipeline without processes or network: the predictor's ONNX Runtime wrapper and the
    transformer's task, called the way `TransformerModel.predict` calls them."""

    task: SeriesTask[Result]
    runtime: OnnxRuntime

    @classmethod
    def open(cls, task: SeriesTask[Result], model: Path, threads: int | None = None) -> InProcess[Result]:
        runtime = OnnxRuntime(model, threads=threads)
        task.configure({"inputs": [t.as_v2_metadata() for t in runtime.inputs],
                        "outputs": [t.as_v2_metadata() for t in runtime.outputs],
                        "parameters": {"metadata": dict(runtime.info.metadata)}})
        return cls(task, runtime)

    def __call__(self, windows: F32) -> dict[str, np.ndarray]:
        feeds, context = self.task.prepare(windows)
        return self.task.v2_outputs(self.task.postprocess(self.runtime.run(feeds), context))


def _example_spec(example: Path) -> VSSModel:
    return VSSModel.from_yaml_file(example)


def evaluate_anomaly(store: Path, example: Path, config: AnomalyConfig, *, requests: int = 400) -> dict[str, Any]:
    model = _example_spec(example)
    test = labelled_windows(rng_for(config.seed, Split.TEST), TEST_PER_KIND, TEST_NORMAL, config.window)
    local = InProcess.open(AnomalyTask(model.spec.anomaly), store / ANOMALY_FILE)
    work = scratch_folder()
    with vss_run(with_version(example, model.spec.version, store, work), work / "anomaly.log") as endpoint:
        served = infer_all(endpoint, test.values, ANOMALY_OUTPUTS)
        speed = throughput(endpoint, test.values, ANOMALY_OUTPUTS, local, requests=requests)
    expected = local(test.values[:PARITY_WINDOWS])
    flagged = served["is_anomaly"].astype(bool)
    quality = detection_by_kind(test.kinds, flagged)
    caught = np.flatnonzero(flagged & (test.kinds != NORMAL))
    named = [FEATURES[test.features[i]] in served["affected_features"][i].decode().split(",") for i in caught]
    first = [served["affected_features"][i].decode().split(",")[0] == FEATURES[test.features[i]] for i in caught]
    severities = {s: int(np.sum(served["severity"][caught] == s.encode()))
                  for s in ("low", "medium", "high", "critical")}
    return {
        "test_windows": {"per_kind": TEST_PER_KIND, "normal": TEST_NORMAL, "window": config.window,
                         "kinds": [k.value for k in KINDS]},
        "quality": {k: asdict(q) for k, q in quality.items()},
        "affected_feature_named": float(np.mean(named)) if named else 0.0,
        "affected_feature_first": float(np.mean(first)) if first else 0.0,
        "severity_of_caught": severities,
        "parity_max_abs_diff": parity({k: v[:PARITY_WINDOWS] for k, v in served.items()}, expected),
        "throughput": speed.as_dict(),
    }


def evaluate_forecasting(store: Path, example: Path, config: ForecastConfig, *,
                         requests: int = 400) -> dict[str, Any]:
    model = _example_spec(example)
    data = forecast_data(config)
    test = data.test
    level = model.spec.forecasting.interval_level
    report: dict[str, Any] = {"test_windows": len(test), "interval_level": level,
                              "mase_scale": [float(v) for v in np.asarray(data.scale)]}
    work = scratch_folder()
    for version in (v.name for v in model.spec.versions):
        local = InProcess.open(ForecastingTask(model.spec.forecasting),
                               store / FORECAST_FILES[version])
        with vss_run(with_version(example, version, store, work), work / f"{version}.log") as endpoint:
            served = infer_all(endpoint, test.lookback, FORECAST_OUTPUTS, batch=256)
            speed = throughput(endpoint, test.lookback, FORECAST_OUTPUTS, local, requests=requests)
        expected = local(test.lookback[:PARITY_WINDOWS])
        quality = forecast_quality(test.lookback, test.future, served["predictions"], served["lower"],
                                   served["upper"], level, data.scale)
        report[version] = {
            "quality": asdict(quality),
            "parity_max_abs_diff": parity({k: v[:PARITY_WINDOWS] for k, v in served.items()}, expected),
            "throughput": speed.as_dict(),
        }
    return report


def evaluate(store: Path, examples: Path, *, quick: bool = False) -> dict[str, Any]:
    """Both tasks through `vss run` of the examples, with their models taken from `store`."""
    requests = 80 if quick else 400
    anomaly = evaluate_anomaly(store, examples / "anomaly.yaml",
                               AnomalyConfig.quick() if quick else AnomalyConfig(), requests=requests)
    (store / "anomaly.evaluation.json").write_text(json.dumps(anomaly, indent=2) + "\n")
    forecasting = evaluate_forecasting(store, examples / "forecasting.yaml",
                                       ForecastConfig.quick() if quick else ForecastConfig(), requests=requests)
    (store / "forecasting.evaluation.json").write_text(json.dumps(forecasting, indent=2) + "\n")
    return {"anomaly": anomaly, "forecasting": forecasting}
