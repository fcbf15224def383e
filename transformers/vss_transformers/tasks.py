"""Each task as the transformer sees it: how it learns the model from the predictor's config, and how
it turns images into a UINT8 batch and the model's outputs into results."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from kserve.protocol.infer_type import InferRequest
from pydantic import BaseModel

from vss_api.errors import InvalidRequest
from vss_api.tracing import stage
from vss_api.v2 import Array
from vss_api.vssmodel import ClassificationParams, DetectionParams, YoloLayout
from vss_transformers import classification, detection
from vss_transformers.class_names import parse_names
from vss_transformers.classification import TopK
from vss_transformers.codecs import Image
from vss_transformers.detection import Detections
from vss_transformers.images import Encoded, ImageRequests
from vss_transformers.letterbox import Letterbox, fitted_size

Parsed = TypeVar("Parsed")  # a request as parsed on the event loop
Context = TypeVar("Context")  # what `prepare` hands `postprocess` about the batch
Result = TypeVar("Result")  # one input's answer, before it is written as v2 tensors or the v1 result


class ServingTask(Protocol[Parsed, Context, Result]):
    """A task's request parsing (`parse_*`, cheap, on the event loop), its CPU work (`prepare`,
    `postprocess`, in an executor) and its answers (`v2_outputs`, `v1_result`). Each task subclasses it
    with its own types, so the transformer's data path from request to answer is type-checked. `params` is the
    task's VSSModel block (`spec.transformer.<name>`)."""

    name: str
    params: BaseModel

    def configure(self, config: Mapping[str, Any]) -> None: ...

    def input_specs(self) -> list[dict[str, Any]]: ...

    def parse_v2(self, request: InferRequest) -> Parsed: ...

    def parse_v1(self, payload: dict[str, Any]) -> Parsed: ...

    def warmup_request(self) -> Parsed: ...

    def prepare(self, parsed: Parsed) -> tuple[dict[str, Array], Context]: ...

    def postprocess(self, outputs: Mapping[str, Array], context: Context) -> Sequence[Result]: ...

    def v2_outputs(self, results: Sequence[Result]) -> dict[str, npt.NDArray[np.generic]]: ...

    def v1_result(self, result: Result, seconds: float) -> dict[str, object]: ...

    def output_specs(self) -> list[dict[str, Any]]: ...


def _image_input(config: Mapping[str, Any]) -> tuple[str, tuple[int, int] | None]:
    inputs = config.get("inputs") or []
    if len(inputs) != 1 or inputs[0].get("datatype") != "UINT8" or len(inputs[0].get("shape", [])) != 4:
        raise RuntimeError(
            f"the predictor must take one UINT8 [N, H, W, 3] input (start it with --normalize), got {inputs}")
    _, h, w, _ = inputs[0]["shape"]
    return str(inputs[0]["name"]), (None if h == -1 or w == -1 else (int(h), int(w)))


def _metadata(config: Mapping[str, Any]) -> dict[str, str]:
    meta = (config.get("parameters") or {}).get("metadata") or {}
    return {str(k): str(v) for k, v in meta.items()}


class ImageTask(ServingTask[Encoded, Context, Result]):
    """What the vision tasks share: image requests in, one UINT8 NHWC tensor to the predictor."""

    input_name = "images"

    def __init__(self, requests: ImageRequests) -> None:
        self.requests = requests

    def input_specs(self) -> list[dict[str, Any]]:
        return self.requests.v2_inputs()

    def parse_v2(self, request: InferRequest) -> Encoded:
        return self.requests.parse_v2(request)

    def parse_v1(self, payload: dict[str, Any]) -> Encoded:
        return self.requests.parse_v1(payload)

    def warmup_request(self) -> Encoded:
        return self.warmup_images()[None]

    def prepare(self, parsed: Encoded) -> tuple[dict[str, Array], Context]:
        with stage("decode"):
            images, sources = self.requests.decode(parsed, self.size_hint)
        with stage("preprocess"):
            batch, context = self.preprocess(images, sources)
        return {self.input_name: batch}, context

    def size_hint(self, height: int, width: int) -> tuple[int, int]:
        """The smallest (h, w) worth decoding a (height, width) source at; the source itself by default."""
        return height, width

    def warmup_images(self) -> Image:
        raise NotImplementedError

    def preprocess(self, images: Sequence[Image], sources: Sequence[tuple[int, int]]
                   ) -> tuple[Image, Context]:
        raise NotImplementedError


class DetectionTask(ImageTask[list[Letterbox], Detections]):
    name = "detection"

    def __init__(self, params: DetectionParams, requests: ImageRequests | None = None) -> None:
        super().__init__(requests or ImageRequests())
        self.params = params
        self.layout = detection.ModelLayout("yolov8", tuple(params.classes or ()), 32, None)
        self.output_name = "output0"
        self._metadata: dict[str, str] = {}
        self._layout_from_first_output = False

    def configure(self, config: Mapping[str, Any]) -> None:
        self.input_name, fixed = _image_input(config)
        outputs = config.get("outputs") or []
        if len(outputs) != 1:
            raise RuntimeError(f"a YOLO detector has exactly one output, the predictor reports {outputs}")
        self.output_name = str(outputs[0]["name"])
        meta = _metadata(config)
        names = tuple(self.params.classes or ()) or parse_names(meta.get("names", ""))
        stride = int(meta["stride"]) if meta.get("stride", "").isdigit() else 32
        shape = outputs[0]["shape"]
        self._metadata = meta
        # Exports with every output dimension dynamic ([-1, -1, -1]) say nothing about their layout until
        # they run: the warm-up inference, before the model reports ready, then settles it.
        self._layout_from_first_output = self.params.layout is YoloLayout.AUTO and (
            len(shape) == 3 and shape[1] == -1 and shape[2] == -1)
        layout = (self.params.layout.value if self.params.layout is not YoloLayout.AUTO
                  else "yolov8" if self._layout_from_first_output
                  else detection.detect_layout(shape, meta, len(names)))
        self.layout = detection.ModelLayout(layout, names, stride, fixed)

    def warmup_images(self) -> Image:
        return np.full((720, 1280, 3), 114, dtype=np.uint8)

    def size_hint(self, height: int, width: int) -> tuple[int, int]:
        """The full frame, as Ultralytics decodes it; with fastDecode the reduced scale that fits inputSize."""
        if self.params.fast_decode:
            return fitted_size((height, width), self.params.input_size)
        return height, width

    def preprocess(self, images: Sequence[Image], sources: Sequence[tuple[int, int]]
                   ) -> tuple[Image, list[Letterbox]]:
        return detection.preprocess(images, self.params.input_size, self.layout, self.params.rectangular, sources)

    def postprocess(self, outputs: Mapping[str, Array], context: list[Letterbox]) -> list[Detections]:
        raw = outputs[self.output_name].astype(np.float32, copy=False)
        if self._layout_from_first_output:
            layout = detection.detect_layout(raw.shape, self._metadata, len(self.layout.names))
            self.layout = dataclasses.replace(self.layout, layout=layout)
            self._layout_from_first_output = False
        return detection.postprocess(raw, context, self.layout, self.params.confidence_threshold,
                                     self.params.iou_threshold, self.params.max_detections)

    def v2_outputs(self, results: Sequence[Detections]) -> dict[str, npt.NDArray[np.generic]]:
        return detection.as_v2_tensors(results, self.layout.names)

    def v1_result(self, result: Detections, seconds: float) -> dict[str, object]:
        return detection.as_v1_result(result, self.layout.names, seconds)

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "class_ids", "datatype": "INT32", "shape": [-1, -1]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "num_detections", "datatype": "INT32", "shape": [-1]}]


class ClassificationTask(ImageTask[None, TopK]):
    name = "classification"

    def __init__(self, params: ClassificationParams, requests: ImageRequests | None = None) -> None:
        super().__init__(requests or ImageRequests())
        self.params = params
        self.crop = params.input_size
        self.resize = params.resize_size or round(params.input_size * 256 / 224)
        self.names: tuple[str, ...] = tuple(params.classes or ())
        self.output_name = "output0"

    def configure(self, config: Mapping[str, Any]) -> None:
        self.input_name, fixed = _image_input(config)
        if fixed is not None and fixed != (self.crop, self.crop):
            raise RuntimeError(f"model input is {fixed[0]}x{fixed[1]} but inputSize is {self.crop}")
        outputs = config.get("outputs") or []
        if not outputs:
            raise RuntimeError("the predictor reports no outputs")
        self.output_name = str(outputs[0]["name"])
        if not self.names:
            self.names = parse_names(_metadata(config).get("names", ""))

    def warmup_images(self) -> Image:
        return np.full((self.resize, self.resize, 3), 128, dtype=np.uint8)

    def size_hint(self, height: int, width: int) -> tuple[int, int]:
        scale = self.resize / min(height, width)
        return math.ceil(height * scale), math.ceil(width * scale)

    def preprocess(self, images: Sequence[Image], sources: Sequence[tuple[int, int]]) -> tuple[Image, None]:
        return classification.preprocess(images, self.resize, self.crop), None

    def postprocess(self, outputs: Mapping[str, Array], context: None) -> list[TopK]:
        raw = outputs[self.output_name]
        if raw.ndim != 2:
            raise InvalidRequest(f"classifier output must be [N, classes], got {list(raw.shape)}")
        probs = classification.to_probabilities(raw.astype(np.float32, copy=False), self.params.softmax)
        return classification.top_k(probs, self.params.top_k)

    def v2_outputs(self, results: Sequence[TopK]) -> dict[str, npt.NDArray[np.generic]]:
        return classification.as_v2_tensors(results, self.names)

    def v1_result(self, result: TopK, seconds: float) -> dict[str, object]:
        return classification.as_v1_result(result, self.names, seconds)

    def output_specs(self) -> list[dict[str, Any]]:
        k = min(self.params.top_k, len(self.names)) if self.names else self.params.top_k
        return [{"name": "labels", "datatype": "BYTES", "shape": [-1, k]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, k]},
                {"name": "class_ids", "datatype": "INT32", "shape": [-1, k]}]
