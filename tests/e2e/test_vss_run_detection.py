"""`vss run` serving a detector end to end: real predictor and transformer processes on loopback, called
with tritonclient (HTTP in-process, gRPC in a child process) and KServe's own REST/gRPC clients.
The model is an ONNX graph with the Ultralytics v8 output layout whose answers are known (tests/fixtures)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.e2e.conftest import jpeg, png, scene
from tests.e2e.serving import REPO, Served, get, post

RED = (200, 100, 400, 300)  # x1, y1, x2, y2 of the red block in the 1280x720 frame
BLUE = (880, 480, 1040, 620)


def _within(box: list[float], region: tuple[int, int, int, int], slack: float = 64) -> bool:
    return (box[0] >= region[0] - slack and box[1] >= region[1] - slack
            and box[2] <= region[2] + slack and box[3] <= region[3] + slack)


def _triton_infer(served: Served, payloads: list[bytes]) -> httpclient.InferResult:
    client = httpclient.InferenceServerClient(served.rest_url)
    tensor = httpclient.InferInput("image", [len(payloads)], "BYTES")
    tensor.set_data_from_numpy(np.array(payloads, dtype=object))
    return client.infer(served.name, [tensor])


def _check_scene(labels: list[str], boxes: list[list[float]]) -> None:
    assert labels, "no detections"
    assert set(labels) == {"person", "object"}
    for label, box in zip(labels, boxes, strict=True):
        assert _within(box, RED if label == "person" else BLUE), (label, box)
    assert max(b[2] for b in boxes) > 900, "boxes are not in original-image pixels"


def test_a_jpeg_over_triton_http_gives_boxes_in_original_image_pixels(detector: Served) -> None:
    result = _triton_infer(detector, [jpeg(scene())])
    n = int(result.as_numpy("num_detections")[0])
    labels = [v.decode() for v in result.as_numpy("labels")[0][:n]]
    boxes = result.as_numpy("boxes")[0][:n].tolist()
    _check_scene(labels, boxes)
    assert result.as_numpy("scores")[0][:n].min() > 0.5
    assert result.as_numpy("class_ids").dtype == np.int32


def test_triton_grpc_gives_the_same_detections_as_http(detector: Served, workdir: Path) -> None:
    image = workdir / "scene.jpg"
    image.write_bytes(jpeg(scene()))
    out = subprocess.run([sys.executable, "-m", "tests.e2e.triton_grpc_call", detector.grpc_url, detector.name,
                          "image", str(image)], capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    via_grpc = json.loads(out.stdout)
    via_http = _triton_infer(detector, [image.read_bytes()])
    assert via_grpc["ready"] is True
    np.testing.assert_allclose(np.array(via_grpc["boxes"]), via_http.as_numpy("boxes"))
    assert via_grpc["num_detections"] == via_http.as_numpy("num_detections").tolist()


def _kserve_request(name: str, payload: bytes) -> InferRequest:
    tensor = InferInput(name="image", shape=[1], datatype="BYTES")
    tensor.set_data_from_numpy(np.array([payload], dtype=object), binary_data=True)
    return InferRequest(model_name=name, infer_inputs=[tensor], request_id="kserve-client")


async def test_kserve_rest_client_with_binary_tensors_gets_the_detections(detector: Served) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        response = await client.infer(f"http://{detector.rest_url}", _kserve_request(detector.name, jpeg(scene())),
                                      model_name=detector.name)
    finally:
        await client.close()
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    n = int(outputs["num_detections"][0])
    labels = [v.decode() if isinstance(v, bytes) else v for v in outputs["labels"][0][:n]]
    _check_scene(labels, outputs["boxes"][0][:n].tolist())


async def test_kserve_grpc_client_gets_the_detections(detector: Served) -> None:
    client = InferenceGRPCClient(detector.grpc_url, timeout=60)
    try:
        response = await client.infer(_kserve_request(detector.name, jpeg(scene())))
    finally:
        await client.close()
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    n = int(outputs["num_detections"][0])
    labels = [v.decode() for v in outputs["labels"][0][:n]]
    _check_scene(labels, outputs["boxes"][0][:n].tolist())


def test_v1_predict_answers_with_the_v1_result(detector: Served) -> None:
    import base64

    body = json.dumps({"instances": [{"image": {"b64": base64.b64encode(jpeg(scene())).decode()}}]}).encode()
    status, reply = post(f"http://{detector.rest_url}/v1/models/{detector.name}:predict", body)
    assert status == 200, reply
    (prediction,) = json.loads(reply)["predictions"]
    assert prediction["total_objects"] == len(prediction["objects"]) > 0
    first = prediction["objects"][0]
    assert set(first) >= {"class", "confidence", "bbox", "center"}
    assert first["center"] == [(first["bbox"][0] + first["bbox"][2]) / 2, (first["bbox"][1] + first["bbox"][3]) / 2]
    assert prediction["processing_time"] > 0


def test_raw_pixels_give_the_same_detections_as_a_lossless_png(detector: Served) -> None:
    client = httpclient.InferenceServerClient(detector.rest_url)
    tensor = httpclient.InferInput("pixels", [720, 1280, 3], "UINT8")
    tensor.set_data_from_numpy(scene())
    by_pixels = client.infer(detector.name, [tensor])
    by_png = _triton_infer(detector, [png(scene())])
    np.testing.assert_allclose(by_pixels.as_numpy("boxes"), by_png.as_numpy("boxes"))


def test_a_batch_of_frames_of_different_sizes_gets_one_result_per_frame(detector: Served) -> None:
    small = scene()[::2, ::2].copy()  # 640x360: boxes scale with it
    result = _triton_infer(detector, [jpeg(scene()), jpeg(small), jpeg(np.zeros((480, 640, 3), np.uint8))])
    counts = result.as_numpy("num_detections").tolist()
    assert counts[0] > 0 and counts[1] > 0 and counts[2] == 0
    boxes = result.as_numpy("boxes")
    assert boxes[1][: counts[1]].max() < 640 < boxes[0][: counts[0]].max()


def test_model_metadata_describes_both_inputs_and_every_output(detector: Served) -> None:
    status, body = get(f"http://{detector.rest_url}/v2/models/{detector.name}")
    assert status == 200
    meta = json.loads(body)
    assert {i["name"] for i in meta["inputs"]} == {"image", "pixels"}
    assert {o["name"] for o in meta["outputs"]} == {"boxes", "scores", "class_ids", "labels", "num_detections"}


def test_the_predictor_reports_the_runtime_and_provider_it_really_got(detector_two: Served) -> None:
    """The predictor's own `/config`: a process of its own only in the two-process layout. The example leaves
    `predictor.runtime` to auto, which runs an image model on the CPU with OpenVINO."""
    port = re.search(r"predictor: http://127.0.0.1:(\d+)/metrics", detector_two.output())
    assert port, detector_two.output()[-2000:]
    status, body = get(f"http://127.0.0.1:{port.group(1)}/v2/models/{detector_two.name}/config")
    assert status == 200
    config = json.loads(body)
    assert config["backend"].startswith("openvino-")
    assert config["parameters"]["providers"] == ["CPU:f32"]
    assert config["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert config["parameters"]["metadata"]["stride"] == "32"


def test_metrics_count_requests_by_outcome_and_time_each_stage(detector: Served) -> None:
    _triton_infer(detector, [jpeg(scene())])
    post(f"http://{detector.rest_url}/v2/models/{detector.name}/infer",
         json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["bm90IGFuIGltYWdl"]}]}
                    ).encode())
    status, body = get(f"http://{detector.rest_url}/metrics")
    text = body.decode()
    assert status == 200
    ok = re.search(r'inference_requests_total\{component="transformer",model_name="cells",status="success",'
                   r'version="v1"\} (\d+)', text)
    bad = re.search(r'inference_requests_total\{component="transformer",model_name="cells",'
                    r'status="client_error",version="v1"\} (\d+)', text)
    assert ok and float(ok.group(1)) >= 1
    assert bad and float(bad.group(1)) >= 1
    for stage in ("preprocess", "predict", "postprocess"):
        assert f'stage="{stage}"' in text


@pytest.mark.parametrize("layout", ["yolov5"])
def test_a_yolov5_layout_export_is_decoded_to_the_same_detections(layout: str, detector: Served,
                                                                   workdir: Path) -> None:
    from tests.e2e.conftest import DETECTION_YAML, write_model_yaml
    from tests.e2e.serving import vss_run
    from tests.fixtures.onnx_graphs import colour_cell_detector, save

    model = save(colour_cell_detector(layout), workdir / f"cells-{layout}.onnx")
    name = f"cells{layout[-1]}"
    with vss_run(write_model_yaml(workdir, name, DETECTION_YAML, model), name, workdir) as v5:
        by_v5 = _triton_infer(v5, [jpeg(scene())])
    by_v8 = _triton_infer(detector, [jpeg(scene())])
    assert by_v5.as_numpy("num_detections").tolist() == by_v8.as_numpy("num_detections").tolist()
    np.testing.assert_allclose(by_v5.as_numpy("boxes"), by_v8.as_numpy("boxes"), atol=0.5)
