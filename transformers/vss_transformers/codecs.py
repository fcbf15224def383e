"""Image decoding for the transformer: JPEG through libjpeg-turbo (simplejpeg), PNG/BMP through OpenCV.
Every failure is an `InvalidImage` that says what was wrong."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import simplejpeg

from vss_api.errors import PayloadTooLarge
from vss_transformers.errors import InvalidImage

Image = npt.NDArray[np.uint8]
# (height, width) of a source image -> the smallest (height, width) the task needs from it. JPEGs are then
# decoded at a reduced DCT scale no smaller than that: a 1280x720 frame for a 640 detector decodes
# straight to 640x360: decode + letterbox 10.6 -> 7.6 ms per frame (26 -> 12.5 ms on a loaded machine).
SizeHint = Callable[[int, int], tuple[int, int]]

JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 7680 * 4320  # transformer.maxImagePixels' default: an 8K UHD frame


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of encoded JPEG, PNG or BMP bytes, from the header alone: what the limits are checked
    against before a byte is decoded."""
    if not data:
        raise InvalidImage("image is empty (0 bytes)")
    if data[:2] == JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise InvalidImage(f"not a readable JPEG header: {exc}") from exc
        return int(height), int(width)
    if data[:8] == PNG_MAGIC:
        return _png_size(data)
    if data[:2] == b"BM":
        return _bmp_size(data)
    raise InvalidImage(f"not a JPEG or PNG image (starts with {data[:8].hex()})")


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, size_hint: SizeHint | None = None
                 ) -> tuple[Image, tuple[int, int]]:
    """RGB uint8 HxWx3 from encoded JPEG or PNG bytes, and the source's (height, width). With a size hint,
    a JPEG may come back smaller than its source, never smaller than the hint."""
    height, width = image_size(data)
    _check_pixels(width * height, max_pixels)  # from the header, before a byte is decoded
    if data[:2] == JPEG_MAGIC:
        min_h, min_w = size_hint(height, width) if size_hint is not None else (height, width)
        reduce = {"min_height": min_h, "min_width": min_w} if min_h < height and min_w < width else {}
        try:
            image: Image = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **reduce)
        except ValueError as exc:
            raise InvalidImage(f"corrupt or truncated JPEG: {exc}") from exc
        return image, (height, width)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise InvalidImage("corrupt or truncated PNG/BMP image")
    _check_pixels(decoded.shape[0] * decoded.shape[1], max_pixels)
    rgb: Image = np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    return rgb, (rgb.shape[0], rgb.shape[1])


def _png_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the IHDR chunk, which the PNG format puts first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidImage("not a readable PNG header (no IHDR chunk first)")
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


def _bmp_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the BITMAPINFOHEADER (a negative height means top-down rows)."""
    if len(data) < 26:
        raise InvalidImage("not a readable BMP header")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    if width <= 0 or height == 0:
        raise InvalidImage(f"BMP header gives an impossible size {width}x{height}")
    return abs(height), width


def _check_pixels(pixels: int, max_pixels: int) -> None:
    if pixels > max_pixels:
        raise PayloadTooLarge(f"image has {pixels} pixels, more than the limit of {max_pixels} "
                              "(transformer.maxImagePixels)")
    if pixels == 0:
        raise InvalidImage("image has no pixels")


def check_pixels(array: npt.NDArray[np.generic], *, max_pixels: int = MAX_PIXELS) -> Image:
    """Validate a raw `pixels` tensor: UINT8 HxWx3 RGB."""
    if array.dtype != np.uint8:
        raise InvalidImage(f"pixels must be UINT8, got {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise InvalidImage(f"pixels must have shape [H, W, 3], got {list(array.shape)}")
    _check_pixels(array.shape[0] * array.shape[1], max_pixels)
    return array.astype(np.uint8, copy=False)


def encode_jpeg(image: Image, quality: int = 90) -> bytes:
    encoded: bytes = simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality, colorspace="RGB")
    return encoded
