"""The shipped time-series models behind real `vss run` processes (examples/anomaly.yaml and
examples/forecasting.yaml, weights from models/artifacts): answers equal the in-process pipeline, the v1
result has its documented fields, and every malformed window is a 400 (gRPC INVALID_ARGUMENT) that says what
is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient import http as triton

from tests.e2e.serving import REPO, Served, post
from vss_api.vssmodel import VSSModel
from vss_models.timeseries.datasets import Split, labelled_windows, rng_for
from vss_models.timeseries.evaluation import ANOMALY_OUTPUTS, FORECAST_OUTPUTS, InProcess
from vss_models.timeseries.sensors import FEATURES, PRESSURE, WEEK, Site, impute, observe, synthesize
from vss_transformers.anomaly import AnomalyTask
from vss_transformers.forecasting import ForecastingTask

ARTIFACTS = REPO / "models" / "artifacts"
ANOMALY_YAML = REPO / "examples" / "anomaly.yaml"
FORECAST_YAML = REPO / "examples" / "forecasting.yaml"

SHIPPED = ("anomaly.onnx", "forecast-lstm.onnx", "forecast-transformer.onnx")


@pytest.fixture(scope="module", autouse=True)
def shipped_time_series_models() -> None:
    """The artifacts are committed: a checkout without them fails here rather than skipping."""
    missing = [name for name in SHIPPED if not (ARTIFACTS / name).is_file()]
    assert not missing, f"models/artifacts lacks {missing}: rebuild them with python -m vss_models.timeseries build"


def infer(served: Served, windows: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    client = triton.InferenceServerClient(served.rest_url)
    try:
        tensor = triton.InferInput("series", list(windows.shape), "FP32")
        tensor.set_data_from_numpy(windows.astype(np.float32), binary_data=True)
        result = client.infer(served.name, [tensor],
                              outputs=[triton.InferRequestedOutput(n, binary_data=True) for n in outputs])
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


def v1(served: Served, instances: list[object]) -> tuple[int, dict[str, object]]:
    status, body = post(f"http://{served.rest_url}/v1/models/{served.name}:predict",
                        json.dumps({"instances": instances}).encode())
    return status, json.loads(body)


def v2_binary(served: Served, array: np.ndarray, datatype: str) -> tuple[int, dict[str, object]]:
    raw = array.tobytes()
    header = json.dumps({"inputs": [{"name": "series", "datatype": datatype, "shape": list(array.shape),
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    status, body = post(f"http://{served.rest_url}/v2/models/{served.name}/infer", header + raw,
                        {"Inference-Header-Content-Length": str(len(header)),
                         "Content-Type": "application/octet-stream"})
    return status, json.loads(body)


def anomaly_windows() -> np.ndarray:
    return labelled_windows(rng_for(7, Split.TEST), per_kind=2, normal=8, window=100).values


def forecast_windows(count: int = 16, step: int = 5) -> np.ndarray:
    rng = np.random.default_rng(11)
    stream = impute(observe(synthesize(Site.draw(rng), WEEK, rng).values, rng))
    return np.stack([stream[i * step:i * step + 24] for i in range(count)])


def test_served_anomaly_verdicts_equal_the_in_process_pipeline(anomaly: Served) -> None:
    windows = anomaly_windows()
    local = InProcess.open(AnomalyTask(VSSModel.from_yaml_file(ANOMALY_YAML).spec.anomaly),
                           ARTIFACTS / "anomaly.onnx")

    served, expected = infer(anomaly, windows, ANOMALY_OUTPUTS), local(windows)

    for name in ("is_anomaly", "severity", "affected_features"):
        np.testing.assert_array_equal(served[name], expected[name], err_msg=name)
    for name in ("anomaly_score", "confidence", "feature_scores"):
        np.testing.assert_allclose(served[name], expected[name], atol=1e-5, err_msg=name)


def one_at_a_time(served: Served, windows: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each window in a request of its own, eight requests at once (so the predictor's batcher merges some of
    them and splits their rows back), the answers stacked in window order."""
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda w: infer(served, w[None], outputs), windows))
    return {name: np.concatenate([a[name] for a in answers]) for name in outputs}


def test_64_anomaly_windows_in_one_request_get_the_verdicts_each_gets_in_a_request_of_its_own(
        anomaly: Served) -> None:
    windows = labelled_windows(rng_for(13, Split.TEST), per_kind=6, normal=40, window=100).values[:64]

    together, alone = infer(anomaly, windows, ANOMALY_OUTPUTS), one_at_a_time(anomaly, windows, ANOMALY_OUTPUTS)

    assert together["is_anomaly"].shape == (64,) and 0 < together["is_anomaly"].sum() < 64
    for name in ("is_anomaly", "severity", "affected_features"):
        np.testing.assert_array_equal(together[name], alone[name], err_msg=name)
    # ONNX Runtime runs a batch of one through other kernels than a batch of many: in-process too, one window at
    # a time differs from 64 at once by up to 2e-5 in scores and 2.5e-4 in feature evidence, moving no verdict
    for name in ("anomaly_score", "confidence"):
        np.testing.assert_allclose(together[name], alone[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(together["feature_scores"], alone["feature_scores"], atol=1e-3)


def test_a_pressure_spike_is_an_anomaly_naming_pressure_and_the_clean_window_is_not(anomaly: Served) -> None:
    rng = np.random.default_rng(5)
    clean = synthesize(Site.draw(rng), WEEK, rng).window(30, 100).values
    spiked = clean.copy()
    spiked[60, PRESSURE] += 8.0  # hPa, for one hour
    windows = np.stack([observe(v, rng, missing_rate=0, outage_rate=0) for v in (clean, spiked)])

    status, reply = v1(anomaly, [{"values": w.tolist(), "features": list(FEATURES)} for w in windows])

    assert status == 200, reply
    normal, spike = reply["predictions"]  # type: ignore[misc]
    assert normal["is_anomaly"] is False and normal["severity"] == "none"
    assert spike["is_anomaly"] is True and spike["affected_features"][0] == "pressure"
    assert spike["severity"] in ("low", "medium", "high", "critical") and spike["confidence"] > 0.5
    assert set(spike) >= {"anomaly_score", "feature_scores", "threshold", "processing_time"}


@pytest.mark.parametrize(("array", "datatype", "message"), [
    (np.zeros((1, 99, 5), np.float32), "FP32", "has 99 steps, the model needs 100"),
    (np.zeros((1, 100, 4), np.float32), "FP32", "has 4 features, expected 5"),
    (np.zeros((1, 100, 5), np.float64), "FP64", "must be FP32, got FP64"),
    (np.full((1, 100, 5), np.nan, np.float32), "FP32", "window 0, step 0, feature 'temperature' is NaN"),
    (np.full((1, 100, 5), np.inf, np.float32), "FP32", "is inf"),
])
def test_a_malformed_v2_window_is_a_400_that_says_what_is_wrong(anomaly: Served, array: np.ndarray,
                                                                datatype: str, message: str) -> None:
    status, reply = v2_binary(anomaly, array, datatype)
    assert status == 400 and message in str(reply["error"]), reply


@pytest.mark.parametrize(("instance", "message"), [
    ({"values": [[1.0] * 5] * 100, "features": ["temperature", "humidity", "pressure", "vibration", "wind"]},
     "unknown feature 'wind'"),
    ({"series": {f: [1.0] * 100 for f in FEATURES[:4]}}, "missing feature 'power'"),
    ({"values": [["20.5"] * 5] * 100}, "must be a number, got str"),
])
def test_a_malformed_v1_window_is_a_400_that_says_what_is_wrong(anomaly: Served, instance: object,
                                                                message: str) -> None:
    status, reply = v1(anomaly, [instance])
    assert status == 400 and message in str(reply["error"]), reply


GRPC_CALL = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
client = grpcclient.InferenceServerClient(sys.argv[1])
tensor = grpcclient.InferInput("series", [1, 42, 5], "FP32")
tensor.set_data_from_numpy(np.zeros((1, 42, 5), np.float32))
try:
    client.infer(sys.argv[2], [tensor])
    print(json.dumps({"status": "OK"}))
except InferenceServerException as exc:
    print(json.dumps({"status": exc.status(), "error": exc.message()}))
"""


def test_a_window_of_the_wrong_length_over_grpc_is_invalid_argument(anomaly: Served) -> None:
    # tritonclient.grpc and kserve cannot share a process (duplicate protobuf symbols): a child calls.
    out = subprocess.run([sys.executable, "-c", GRPC_CALL, anomaly.grpc_url, anomaly.name], capture_output=True,
                         text=True, cwd=REPO, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "has 42 steps, the model needs 100" in result["error"]


def test_served_forecasts_equal_the_in_process_pipeline(forecaster: Served) -> None:
    model = VSSModel.from_yaml_file(FORECAST_YAML)
    local = InProcess.open(ForecastingTask(model.spec.forecasting), ARTIFACTS / "forecast-transformer.onnx")
    windows = forecast_windows()

    served, expected = infer(forecaster, windows, FORECAST_OUTPUTS), local(windows)

    for name in FORECAST_OUTPUTS:
        np.testing.assert_allclose(served[name], expected[name], atol=1e-4, err_msg=name)
    assert (served["lower"] < served["predictions"]).all() and (served["predictions"] < served["upper"]).all()


def test_64_lookbacks_in_one_request_get_the_forecasts_each_gets_in_a_request_of_its_own(
        forecaster: Served) -> None:
    windows = forecast_windows(64, step=2)

    together, alone = infer(forecaster, windows, FORECAST_OUTPUTS), one_at_a_time(forecaster, windows, FORECAST_OUTPUTS)

    assert together["predictions"].shape == (64, 6, 5)
    np.testing.assert_array_equal(together["forecast_horizon"], alone["forecast_horizon"])
    for name in ("predictions", "lower", "upper"):
        np.testing.assert_allclose(together[name], alone[name], atol=1e-4, err_msg=name)


def test_v1_forecasts_have_the_v1_result_fields_per_feature(forecaster: Served) -> None:
    status, reply = v1(forecaster, [forecast_windows(1)[0].tolist()])

    assert status == 200, reply
    [forecast] = reply["predictions"]  # type: ignore[misc]
    assert forecast["forecast_horizon"] == 6
    assert list(forecast["predictions"]) == list(FEATURES)
    assert all(len(v) == 6 for v in forecast["predictions"].values())
    intervals = forecast["confidence_intervals"]
    assert intervals["level"] == 0.9
    assert all(lo <= hi for lo, hi in zip(intervals["lower"]["power"], intervals["upper"]["power"], strict=True))


def test_a_lookback_of_the_wrong_length_is_a_400(forecaster: Served) -> None:
    status, reply = v1(forecaster, [forecast_windows(1)[0][:20].tolist()])
    assert status == 400 and "has 20 steps, the model needs 24 (spec.transformer.forecasting.lookback)" in str(
        reply["error"])


def test_the_example_yamls_are_valid_vssmodels_with_time_series_tasks() -> None:
    assert VSSModel.from_yaml_file(ANOMALY_YAML).spec.anomaly.window == 100
    forecasting = VSSModel.from_yaml_file(FORECAST_YAML).spec
    assert [v.name for v in forecasting.versions] == ["lstm", "transformer"]
    assert forecasting.forecasting.interval_level == 0.9


