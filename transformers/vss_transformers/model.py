"""The transformer as a KServe `Model`: v2 tensors (`image` BYTES or `pixels` UINT8) and the seed's v1
JSON in, task results out; the model itself runs in the predictor, one gRPC hop away."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Sequence
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse
from vss_predictors.metrics import ServingMetrics
from vss_predictors.server import binary_output

from vss_transformers.codecs import MAX_PIXELS, Image, check_pixels, decode_image
from vss_transformers.errors import InvalidImage, InvalidRequest
from vss_transformers.predictor_client import PredictorClient
from vss_transformers.tasks import Task

log = logging.getLogger(__name__)


def _bytes_of(item: Any, index: int) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        return item.tobytes()
    if isinstance(item, str):  # JSON clients send BYTES as strings: accept base64 there
        try:
            return base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidImage(f"image[{index}] is a string but not base64: {exc}") from exc
    raise InvalidImage(f"image[{index}] must be encoded image bytes, got {type(item).__name__}")


class TransformerModel(kserve.Model):
    def __init__(self, name: str, version: str, task: Task, client: PredictorClient,
                 metrics: ServingMetrics, *, max_batch_images: int = 64, max_pixels: int = MAX_PIXELS,
                 predictor_wait_s: float = 300.0) -> None:
        super().__init__(name)
        self.version = version
        self.task = task
        self.client = client
        self.metrics = metrics
        self.max_batch_images = max_batch_images
        self.max_pixels = max_pixels
        self.predictor_wait_s = predictor_wait_s
        self._labels = {"model_name": name, "version": version, "component": "transformer"}

    def load(self) -> bool:
        config = self.client.fetch_config(self.predictor_wait_s)
        self.task.configure(config)
        feeds, context = self._prepare_images(self.task.warmup_images())
        self.task.postprocess(self.client.infer_blocking(feeds), context)
        log.info("transformer ready", extra={"model": self.name, "task": self.task.name,
                                             "predictor": config.get("parameters", {}).get("providers")})
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        """Either input, not both: encoded images, or raw RGB pixels."""
        return [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return self.task.output_specs()

    # --- request decoding -------------------------------------------------------------------------
    def _encoded_from_v2(self, request: InferRequest) -> list[bytes] | Image:
        names = {t.name for t in request.inputs}
        if names not in ({"image"}, {"pixels"}):
            raise InvalidRequest(f"send exactly one input, 'image' (BYTES, encoded JPEG/PNG) or 'pixels' "
                                 f"(UINT8 [N,]H,W,3); got {sorted(names)}")
        tensor = request.inputs[0]
        if tensor.name == "image":
            if tensor.datatype != "BYTES":
                raise InvalidRequest(f"input 'image' must be BYTES, got {tensor.datatype}")
            try:
                items = tensor.as_numpy().reshape(-1)
            except (ValueError, TypeError) as exc:
                raise InvalidImage(f"input 'image' does not match its shape {tensor.shape}: {exc}") from exc
            return [_bytes_of(x, i) for i, x in enumerate(items)]
        if tensor.datatype != "UINT8":
            raise InvalidImage(f"input 'pixels' must be UINT8, got {tensor.datatype}")
        try:
            pixels = tensor.as_numpy()
        except (ValueError, TypeError) as exc:
            raise InvalidImage(f"input 'pixels' does not match its shape {tensor.shape}: {exc}") from exc
        batch: Image = pixels[None] if pixels.ndim == 3 else pixels
        return batch

    @staticmethod
    def _encoded_from_v1(payload: dict[str, Any]) -> list[bytes]:
        instances = payload.get("instances")
        if not isinstance(instances, list):
            raise InvalidRequest('v1 requests need "instances": [{"image": {"b64": "..."}}, ...]')
        out = []
        for i, inst in enumerate(instances):
            value = inst.get("image", inst.get("image_bytes")) if isinstance(inst, dict) else inst
            if isinstance(value, dict):
                value = value.get("b64")
            if not isinstance(value, str):
                raise InvalidRequest(f'instances[{i}] needs an image as base64: {{"image": {{"b64": ...}}}}')
            out.append(_bytes_of(value, i))
        return out

    def _decode(self, encoded: list[bytes] | Image) -> list[Image]:
        count = len(encoded)
        if count == 0:
            raise InvalidRequest("the batch is empty: send at least one image")
        if count > self.max_batch_images:
            raise InvalidRequest(f"a batch of {count} images is over the limit of {self.max_batch_images}")
        if isinstance(encoded, np.ndarray):
            return [check_pixels(p, max_pixels=self.max_pixels) for p in encoded]
        images = []
        for i, data in enumerate(encoded):
            try:
                images.append(decode_image(data, max_pixels=self.max_pixels))
            except InvalidImage as exc:
                raise InvalidImage(f"image[{i}]: {exc.reason}") from exc
        return images

    def _prepare_images(self, images: Sequence[Image]) -> tuple[dict[str, Any], Any]:
        batch, context = self.task.preprocess(images)
        return {self.task.input_name: batch}, context

    def _prepare(self, encoded: list[bytes] | Image) -> tuple[dict[str, Any], Any]:
        return self._prepare_images(self._decode(encoded))

    # --- serving ----------------------------------------------------------------------------------
    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse | dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        status = "success"
        try:
            if isinstance(payload, InferRequest):
                encoded = self._encoded_from_v2(payload)
            elif isinstance(payload, dict):
                encoded = self._encoded_from_v1(payload)
            else:
                raise InvalidRequest(f"unsupported request type {type(payload).__name__}")
            feeds, context = await loop.run_in_executor(None, self._prepare, encoded)
            t_pre = time.perf_counter()
            outputs = await self.client.infer(feeds)
            t_pred = time.perf_counter()
            results = await loop.run_in_executor(None, self.task.postprocess, outputs, context)
            t_post = time.perf_counter()
        except InvalidInput:
            status = "client_error"
            raise
        except Exception:
            status = "server_error"
            raise
        finally:
            self.metrics.requests.labels(**self._labels, status=status).inc()
        for stage, seconds in (("preprocess", t_pre - started), ("predict", t_pred - t_pre),
                               ("postprocess", t_post - t_pred), ("total", t_post - started)):
            self.metrics.duration.labels(**self._labels, stage=stage).observe(seconds)
        if isinstance(payload, dict):
            return {"predictions": [self.task.seed_json(r, t_post - started) for r in results]}
        tensors = self.task.v2_outputs(results)
        infer_outputs = [binary_output(n, a) for n, a in tensors.items()]
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=infer_outputs,
                             model_version=self.version, use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)
