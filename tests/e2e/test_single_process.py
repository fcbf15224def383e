"""Single-process mode (`vss_cli.single_process`, what `vss run` and the operator give a CPU model): one process
that runs the model itself answers v2 REST, v2 gRPC and v1 exactly as the two-process layout does on the same
model and spec (the `*_two` fixtures), refuses the same bad input with the same 4xx, and exports both components'
metrics on its one `/metrics`. Overload (503 / 504) in this mode: tests/e2e/test_overload.py, whose `vss run`
now serves one process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.e2e.conftest import jpeg, png, scene
from tests.e2e.serving import REPO, Served, get, post
from tests.e2e.test_vss_run_bad_input import CASES

DETECTION_OUTPUTS = ("boxes", "scores", "class_ids", "labels", "num_detections")
CLASSIFICATION_OUTPUTS = ("labels", "scores", "class_ids")


def _frames() -> list[bytes]:
    """Frames of two sizes and both codecs, so the batch is letterboxed two ways."""
    small = scene()[::2, ::2].copy()
    return [jpeg(scene()), png(small), jpeg(np.ascontiguousarray(scene()[:, ::-1]))]


def _rest_outputs(served: Served, payloads: list[bytes], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(served.rest_url)
    tensor = httpclient.InferInput("image", [len(payloads)], "BYTES")
    tensor.set_data_from_numpy(np.array(payloads, dtype=object))
    result = client.infer(served.name, [tensor])
    return {name: result.as_numpy(name) for name in names}


def _serving_processes(served: Served) -> list[str]:
    """The command lines of the processes `vss run` started."""
    children = Path(f"/proc/{served.process.pid}/task/{served.process.pid}/children").read_text().split()
    return [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in children]


def test_a_cpu_model_is_served_by_one_process_and_the_two_process_layout_by_two(
        detector: Served, detector_two: Served) -> None:
    one = _serving_processes(detector)
    assert len(one) == 1 and "vss_cli.single_process" in one[0], one
    two = _serving_processes(detector_two)
    assert sorted("vss_predictors" in c for c in two) == [False, True] and any("vss_transformers" in c for c in two)


def test_v2_rest_detections_equal_the_two_process_ones_tensor_for_tensor(
        detector: Served, detector_two: Served) -> None:
    frames = _frames()
    one = _rest_outputs(detector, frames, DETECTION_OUTPUTS)
    two = _rest_outputs(detector_two, frames, DETECTION_OUTPUTS)
    assert int(one["num_detections"].sum()) > 0
    for name in DETECTION_OUTPUTS:
        assert one[name].dtype == two[name].dtype and one[name].shape == two[name].shape, name
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def test_v2_rest_classifications_equal_the_two_process_ones(classifier: Served, classifier_two: Served) -> None:
    frames = _frames()
    one = _rest_outputs(classifier, frames, CLASSIFICATION_OUTPUTS)
    two = _rest_outputs(classifier_two, frames, CLASSIFICATION_OUTPUTS)
    for name in CLASSIFICATION_OUTPUTS:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def _grpc_call(served: Served, mode: str, image: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "tests.e2e.triton_grpc_call", served.grpc_url, served.name, mode,
                          str(image)], capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    answer: dict[str, object] = json.loads(out.stdout)
    return answer


@pytest.mark.parametrize("mode", ["image", "pixels-float"])
def test_v2_grpc_answers_and_refusals_equal_the_two_process_ones(
        detector: Served, detector_two: Served, workdir: Path, mode: str) -> None:
    """A good image's detections, and a bad tensor's INVALID_ARGUMENT with its reason, alike on both."""
    image = workdir / "single-process-scene.jpg"
    image.write_bytes(jpeg(scene()))
    one, two = _grpc_call(detector, mode, image), _grpc_call(detector_two, mode, image)
    assert one == two
    assert one["ready"] is True
    assert ("error" in one) is (mode == "pixels-float")


def test_v1_predict_answers_equal_the_two_process_ones_but_for_the_time_taken(
        detector: Served, detector_two: Served) -> None:
    body = json.dumps({"instances": [{"image": {"b64": __import__("base64").b64encode(jpeg(scene())).decode()}}]})

    def answer(served: Served) -> list[dict[str, object]]:
        status, reply = post(f"http://{served.rest_url}/v1/models/{served.name}:predict", body.encode())
        assert status == 200, reply
        predictions: list[dict[str, object]] = json.loads(reply)["predictions"]
        for p in predictions:
            p.pop("processing_time")
        return predictions

    one = answer(detector)
    assert one == answer(detector_two) and one[0]["total_objects"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_the_same_4xx_and_reason_as_from_two_processes(
        detector: Served, detector_two: Served, case: str) -> None:
    (body, headers), status, reason = CASES[case]
    answers = [post(f"http://{s.rest_url}/v2/models/{s.name}/infer", body, headers) for s in (detector, detector_two)]
    assert answers[0][0] == answers[1][0] == status
    assert reason in answers[0][1].decode()
    assert json.loads(answers[0][1]) == json.loads(answers[1][1])


def test_one_metrics_page_has_the_transformers_and_the_predictors_series(detector: Served) -> None:
    """What dashboards, alerts and the canary analysis read from the predictor (its requests, `predict` stage,
    batch sizes and queue depth) and from the transformer, all on the one process's `/metrics`."""
    _rest_outputs(detector, [jpeg(scene())], DETECTION_OUTPUTS)
    status, body = get(f"http://{detector.rest_url}/metrics")
    text = body.decode()
    assert status == 200

    def value(pattern: str) -> float:
        found = re.search(pattern + r" ([0-9.e+]+)", text)
        assert found, pattern
        return float(found.group(1))

    for component in ("predictor", "transformer"):
        assert value(rf'inference_requests_total\{{component="{component}",model_name="cells",'
                     r'status="success",version="v1"\}') >= 1
    assert value(r'inference_duration_seconds_count\{component="predictor",model_name="cells",stage="predict",'
                 r'version="v1"\}') >= 1
    for stage in ("preprocess", "predict", "postprocess", "total"):
        assert f'component="transformer",model_name="cells",stage="{stage}"' in text
    assert value(r'inference_batch_size_count\{model_name="cells",version="v1"\}') >= 1
    assert value(r'inference_queue_depth\{model_name="cells",version="v1"\}') == 0


def test_the_server_is_ready_only_after_the_model_is_loaded_and_both_warm_ups_ran(detector: Served) -> None:
    """`vss run` prints that it serves once the readiness endpoint answers 200: by then the runtime's warm-up
    (`model ready`) and the transformer's own warm-up request through it (`transformer ready`) are logged."""
    log = detector.output()
    marks = [log.find('"model ready"'), log.find('"transformer ready"'), log.find("is serving")]
    assert -1 not in marks and marks == sorted(marks), log[-3000:]
    assert get(f"http://{detector.rest_url}/v2/health/ready")[0] == 200
