import base64

import numpy as np

from vss_api.vssmodel import DetectionParams
from vss_transformers.codecs import encode_jpeg
from vss_transformers.tasks import DetectionTask

CONFIG = {
    "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
    "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, -1, -1]}],
    "parameters": {"metadata": {"names": "{0: 'person', 1: 'vehicle', 2: 'object'}", "stride": "32"}},
}


def test_an_export_with_every_output_dimension_dynamic_gets_its_layout_from_the_first_output() -> None:
    task = DetectionTask(DetectionParams())
    task.configure(CONFIG)
    feeds, context = task.prepare(task.warmup_request())
    task.postprocess({"output0": np.zeros((1, 25200, 8), np.float32)}, context)
    assert task.layout.layout == "yolov5"
    task.configure(CONFIG)
    task.postprocess({"output0": np.zeros((1, 7, 5040), np.float32)}, context)
    assert task.layout.layout == "yolov8"
    assert task.layout.names == ("person", "vehicle", "object")
    assert feeds["images"].shape == (1, 384, 640, 3)


def test_a_fixed_output_shape_decides_the_layout_at_configure() -> None:
    task = DetectionTask(DetectionParams())
    task.configure({**CONFIG, "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, 300, 6]}]})
    assert task.layout.layout == "end2end"


def test_a_jpeg_is_decoded_in_full_by_default_and_at_a_reduced_scale_only_with_fast_decode() -> None:
    frame = encode_jpeg(np.full((720, 1280, 3), 90, np.uint8))
    for fast, decoded in ((False, (720, 1280)), (True, (360, 640))):
        task = DetectionTask(DetectionParams(fast_decode=fast))
        task.configure(CONFIG)
        images, sources = task.requests.decode(task.parse_v1({"instances": [{"image": {"b64": _b64(frame)}}]}),
                                               task.size_hint)
        assert images[0].shape[:2] == decoded and sources[0] == (720, 1280)
        feeds, context = task.prepare(task.parse_v1({"instances": [{"image": {"b64": _b64(frame)}}]}))
        assert feeds["images"].shape == (1, 384, 640, 3) and context[0].width == 1280


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
