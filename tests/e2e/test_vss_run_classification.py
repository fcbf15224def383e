"""`vss run` serving a classifier end to end (an ONNX graph that names an image's dominant colour)."""

from __future__ import annotations

import base64
import json

import numpy as np
import tritonclient.http as httpclient

from tests.e2e.conftest import jpeg
from tests.e2e.serving import Served, post


def _solid(rgb: tuple[int, int, int], hw: tuple[int, int] = (300, 400)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (*hw, 3)).copy()


def test_top_k_labels_come_back_best_first_for_each_image(classifier: Served) -> None:
    client = httpclient.InferenceServerClient(classifier.rest_url)
    images = [jpeg(_solid((250, 10, 10))), jpeg(_solid((10, 10, 250), (720, 1280))), jpeg(_solid((5, 5, 5)))]
    tensor = httpclient.InferInput("image", [3], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    result = client.infer(classifier.name, [tensor])
    labels = result.as_numpy("labels")
    scores = result.as_numpy("scores")
    assert labels.shape == (3, 3) and scores.shape == (3, 3)
    assert [row[0].decode() for row in labels] == ["red", "blue", "dark"]
    assert (np.diff(scores, axis=1) <= 0).all(), "scores must be sorted, best first"
    np.testing.assert_allclose(scores.sum(axis=1) <= 1.0 + 1e-5, True)


def test_v1_predict_answers_with_predictions_and_the_top_one(classifier: Served) -> None:
    body = json.dumps({"instances": [{"image": {"b64": base64.b64encode(jpeg(_solid((10, 240, 10)))).decode()}}]})
    status, reply = post(f"http://{classifier.rest_url}/v1/models/{classifier.name}:predict", body.encode())
    assert status == 200, reply
    (prediction,) = json.loads(reply)["predictions"]
    assert prediction["top_prediction"] == "green" == prediction["predictions"][0]["class"]
    assert prediction["confidence"] == prediction["predictions"][0]["confidence"] > 0.5
    assert len(prediction["predictions"]) == 3
