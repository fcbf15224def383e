"""`vss predict` against the shipped models served by real `vss run` processes: the JSON it prints is the server's
answer (the same request made with tritonclient answers the same), and the files it writes are real images of
the input's size with the boxes or top-k drawn on them, and plots of the series tasks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.e2e.conftest import jpeg
from tests.e2e.serving import REPO, Served, vss_run
from vss_models.samples import scene_frame, sensor_log, write_csv


def vss_predict(served: Served, inputs: list[Path], out: Path) -> tuple[list[dict[str, object]], str]:
    done = subprocess.run([sys.executable, "-m", "vss_cli.main", "predict", *map(str, inputs),
                           "--url", f"http://{served.rest_url}", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=180)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def outputs(answer: dict[str, object]) -> dict[str, np.ndarray]:
    listed = answer["outputs"]
    assert isinstance(listed, list)
    return {o["name"]: np.asarray(o["data"], dtype=object if o["datatype"] == "BYTES" else None).reshape(o["shape"])
            for o in listed}


def triton_image(served: Served, payload: bytes, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(served.rest_url)
    try:
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([payload], dtype=object))
        result = client.infer(served.name, [tensor])
        return {n: result.as_numpy(n) for n in names}
    finally:
        client.close()


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with vss_run(REPO / "examples" / "detection.yaml", "detector", tmp_path_factory.mktemp("det")) as served:
        yield served


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with vss_run(REPO / "examples" / "classification.yaml", "classifier", tmp_path_factory.mktemp("cls")) as served:
        yield served


@pytest.fixture(scope="module")
def sensors_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(sensor_log(), tmp_path_factory.mktemp("series") / "sensors.csv")


def test_detections_are_printed_as_the_server_answers_and_drawn_where_the_boxes_are(
        detector: Served, tmp_path: Path) -> None:
    frame = scene_frame()
    source = tmp_path / "scene.jpg"
    source.write_bytes(jpeg(frame))
    (answer,), stderr = vss_predict(detector, [source], tmp_path / "out")
    printed = outputs(answer)
    direct = triton_image(detector, source.read_bytes(), ("boxes", "labels", "num_detections"))
    n = int(direct["num_detections"][0])
    assert n > 0 and int(printed["num_detections"][0]) == n
    np.testing.assert_allclose(printed["boxes"].astype(np.float32), direct["boxes"], rtol=1e-6)
    assert [str(v) for v in printed["labels"][0]] == [v.decode() for v in direct["labels"][0]]

    written = tmp_path / "out" / "scene.annotated.jpg"
    assert f"wrote {written}" in stderr
    drawn = cv2.imread(str(written))
    original = cv2.imdecode(np.frombuffer(source.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert drawn is not None and drawn.shape == original.shape
    difference = np.abs(drawn.astype(np.int16) - original.astype(np.int16)).max(axis=2) > 40
    for x1, y1, x2, y2 in direct["boxes"][0][:n].round().astype(int).tolist():
        edge = difference[max(y1, 0):y2, max(x1 - 1, 0):x1 + 2]
        assert edge.mean() > 0.5, f"the left edge of box {(x1, y1, x2, y2)} is not drawn"
    assert difference.mean() < 0.25, "the frame itself must stay visible under the boxes"


def test_top_k_is_printed_as_the_server_answers_and_written_on_the_image(classifier: Served, tmp_path: Path) -> None:
    image = tmp_path / "pattern.png"
    stripes = np.zeros((300, 400, 3), np.uint8)
    stripes[::20] = 255
    stripes[1::20] = 255
    assert cv2.imwrite(str(image), stripes)
    (answer,), _ = vss_predict(classifier, [image], tmp_path / "out")
    direct = triton_image(classifier, image.read_bytes(), ("labels", "scores"))
    assert [str(v) for v in outputs(answer)["labels"][0]] == [v.decode() for v in direct["labels"][0]]
    drawn = cv2.imread(str(tmp_path / "out" / "pattern.annotated.png"))
    assert drawn is not None and drawn.shape == stripes.shape
    changed = np.abs(drawn.astype(np.int16) - stripes.astype(np.int16)).max(axis=2) > 40
    assert changed[:120, :200].mean() > 0.1, "the top-k list is drawn in the top-left corner"
    assert not changed[200:, 250:].any(), "nothing is drawn away from the list"


def test_an_anomaly_score_is_printed_and_plotted_for_each_window_slid_over_the_series(
        anomaly: Served, sensors_csv: Path, tmp_path: Path) -> None:
    (answer,), _ = vss_predict(anomaly, [sensors_csv], tmp_path / "out")
    scores = outputs(answer)["anomaly_score"].astype(np.float32)
    log = sensor_log()
    starts = list(range(0, len(log) - 100 + 1, 2))
    assert scores.shape == (len(starts),)
    client = httpclient.InferenceServerClient(anomaly.rest_url)
    try:
        windows = np.stack([np.loadtxt(sensors_csv, delimiter=",", skiprows=1, dtype=np.float32)[s:s + 100]
                            for s in starts])
        tensor = httpclient.InferInput("series", list(windows.shape), "FP32")
        tensor.set_data_from_numpy(windows)
        np.testing.assert_allclose(scores, client.infer(anomaly.name, [tensor]).as_numpy("anomaly_score"), atol=1e-6)
    finally:
        client.close()
    first = np.asarray(starts)
    holding = (first <= 255) & (first + 99 >= 285)
    assert scores[first + 99 < 240].max() < 0.5 < scores[holding].min(), \
        "the windows holding the raised vibration (readings 250-290) are the anomalous ones, the earlier ones not"
    plot = cv2.imread(str(tmp_path / "out" / "sensors.anomaly.png"))
    assert plot is not None and plot.shape[0] > 500 and plot.shape[1] > 800


def test_a_forecast_is_printed_and_plotted_with_its_interval(forecaster: Served, sensors_csv: Path,
                                                            tmp_path: Path) -> None:
    (answer,), _ = vss_predict(forecaster, [sensors_csv], tmp_path / "out")
    got = outputs(answer)
    assert got["predictions"].shape == (1, 6, 5)
    assert (got["lower"] <= got["predictions"]).all() and (got["predictions"] <= got["upper"]).all()
    plot = cv2.imread(str(tmp_path / "out" / "sensors.forecast.png"))
    assert plot is not None and plot.shape[0] > 500


def test_an_input_the_model_does_not_take_is_refused_before_any_request(detector: Served,
                                                                        sensors_csv: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "vss_cli.main", "predict", str(sensors_csv),
                           "--url", f"http://{detector.rest_url}"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1 and not done.stdout
    assert "(detection) takes .jpg, .jpeg, .png, .bmp, .webp files" in done.stderr and "Traceback" not in done.stderr
