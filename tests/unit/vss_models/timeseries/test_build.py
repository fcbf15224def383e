"""The quick recipe end to end (seconds of training, not quality): three ONNX graphs the predictor can
serve as they are, each with its calibration in metadata, and manifests whose sha256 catch a changed file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from vss_models.timeseries.build import TimeSeriesBuild, build
from vss_models.timeseries.manifests import verify
from vss_models.timeseries.onnx_export import run, session
from vss_models.timeseries.recipes import ANOMALY_FILE, FORECAST_FILES


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> TimeSeriesBuild:
    return build(tmp_path_factory.mktemp("timeseries"), quick=True, log=False)


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load_model(str(path)).metadata_props}


def test_the_anomaly_graph_takes_raw_windows_and_answers_with_a_calibrated_score(built: TimeSeriesBuild) -> None:
    model = onnx.load_model(str(built.anomaly))
    out = run(session(model), {"series": np.random.default_rng(0).normal(20, 1, (3, 100, 5)).astype(np.float32)})
    meta = _meta(built.anomaly)

    assert [o.name for o in model.graph.output] == ["anomaly_score", "evidence", "feature_evidence",
                                                    "forest_score"]
    assert out["anomaly_score"].shape == (3,) and ((out["anomaly_score"] >= 0) & (out["anomaly_score"] <= 1)).all()
    assert out["feature_evidence"].shape == (3, 5)
    assert json.loads(meta["vss.features"]) == ["temperature", "humidity", "pressure", "vibration", "power"]
    assert 0 < float(meta["vss.threshold"]) < 1 and len(json.loads(meta["vss.severity_edges"])) == 3
    assert any(o.domain == "ai.onnx.ml" for o in model.opset_import)  # the forest is inside the graph


@pytest.mark.parametrize("architecture", sorted(FORECAST_FILES))
def test_each_forecaster_maps_24_readings_to_6_and_stores_its_conformal_radii(
        built: TimeSeriesBuild, architecture: str) -> None:
    path = built.forecasters[architecture]
    out = run(session(onnx.load_model(str(path))), {"series": np.ones((2, 24, 5), np.float32)})
    meta = _meta(path)

    assert out["forecast"].shape == (2, 6, 5)
    radius = np.array(json.loads(meta["vss.interval_radius"]))
    assert radius.shape == (len(json.loads(meta["vss.interval_levels"])), 6, 5)
    assert (np.diff(radius, axis=0) >= 0).all()  # a higher level never gets a narrower interval


def test_the_manifests_hold_every_file_with_its_sha256_and_catch_a_change(built: TimeSeriesBuild) -> None:
    folder = built.anomaly.parent
    manifest = json.loads((folder / "anomaly.manifest.json").read_text())

    assert set(manifest["files"]) == {ANOMALY_FILE}
    assert set(json.loads((folder / "forecasting.manifest.json").read_text())["files"]) == set(
        FORECAST_FILES.values())
    assert verify(folder) == []
    original = built.anomaly.read_bytes()
    try:
        built.anomaly.write_bytes(original + b"\0")
        assert verify(folder) == [ANOMALY_FILE]
    finally:
        built.anomaly.write_bytes(original)
