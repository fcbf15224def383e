"""Image requests, shared by the vision tasks: `image` (BYTES, encoded JPEG/PNG) or `pixels`
(UINT8 [N,]H,W,3) on v2, base64 `instances` on v1, decoded under batch and pixel limits."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferRequest

from vss_api.errors import InvalidRequest, PayloadTooLarge
from vss_api.v2 import CONTENT_ERRORS
from vss_transformers.codecs import MAX_PIXELS, Image, SizeHint, check_pixels, decode_image, image_size
from vss_transformers.errors import InvalidImage

Encoded = list[bytes] | Image


def _bytes_of(item: Any, index: int) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):  # JSON clients send BYTES as strings: accept base64 there
        try:
            return base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidImage(f"image[{index}] is a string but not base64: {exc}") from exc
    raise InvalidImage(f"image[{index}] must be encoded image bytes, got {type(item).__name__}")


@dataclass(frozen=True)
class ImageRequests:
    max_batch_images: int = 64
    max_pixels: int = MAX_PIXELS  # one image
    max_batch_pixels: int = 2 * MAX_PIXELS  # all the images of one request together

    @staticmethod
    def v2_inputs() -> list[dict[str, Any]]:
        """Either input, not both: encoded images, or raw RGB pixels."""
        return [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]

    def parse_v2(self, request: InferRequest) -> Encoded:
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
            except CONTENT_ERRORS as exc:
                raise InvalidImage(f"input 'image' does not match its shape {tensor.shape}: {exc}") from exc
            return [_bytes_of(x, i) for i, x in enumerate(items)]
        if tensor.datatype != "UINT8":
            raise InvalidImage(f"input 'pixels' must be UINT8, got {tensor.datatype}")
        try:
            pixels = tensor.as_numpy()
        except OverflowError as exc:  # JSON `data` with a value outside 0..255
            raise InvalidImage(f"input 'pixels' holds a value outside 0..255 (UINT8): {exc}") from exc
        except CONTENT_ERRORS as exc:
            raise InvalidImage(f"input 'pixels' does not match its shape {tensor.shape}: {exc}") from exc
        if pixels.ndim not in (3, 4):
            raise InvalidImage(f"pixels must have shape [N, H, W, 3] or [H, W, 3], got {list(pixels.shape)}")
        batch: Image = pixels[None] if pixels.ndim == 3 else pixels
        return batch

    def parse_v1(self, payload: dict[str, Any]) -> Encoded:
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

    def decode(self, encoded: Encoded, size_hint: SizeHint | None = None
               ) -> tuple[list[Image], list[tuple[int, int]]]:
        """The images, maybe decoded at a reduced scale, and each source's (height, width)."""
        count = len(encoded)
        if count == 0:
            raise InvalidRequest("the batch is empty: send at least one image")
        if count > self.max_batch_images:
            raise InvalidRequest(f"a batch of {count} images is over the limit of {self.max_batch_images}")
        if isinstance(encoded, np.ndarray):
            self._check_batch_pixels(count * encoded.shape[1] * encoded.shape[2] if encoded.ndim == 4 else 0)
            pixels = [check_pixels(p, max_pixels=self.max_pixels) for p in encoded]
            return pixels, [(p.shape[0], p.shape[1]) for p in pixels]
        total = 0
        for i, data in enumerate(encoded):  # every header first: nothing is decoded for a batch over the limit
            try:
                height, width = image_size(data)
            except InvalidImage as exc:
                raise InvalidImage(f"image[{i}]: {exc.reason}") from exc
            total += height * width
        self._check_batch_pixels(total)
        images, sources = [], []
        for i, data in enumerate(encoded):
            try:
                image, source = decode_image(data, max_pixels=self.max_pixels, size_hint=size_hint)
            except InvalidImage as exc:
                raise InvalidImage(f"image[{i}]: {exc.reason}") from exc
            images.append(image)
            sources.append(source)
        return images, sources

    def _check_batch_pixels(self, total: int) -> None:
        if total > self.max_batch_pixels:
            raise PayloadTooLarge(f"the images of this request hold {total} pixels together, more than the "
                                  f"limit of {self.max_batch_pixels} (transformer.maxBatchPixels)")
