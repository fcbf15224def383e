"""ImageRequests.parse_v2 on tensors whose contents do not fit them: each is an InvalidImage (400 /
INVALID_ARGUMENT) naming the input, never another exception (found by tests/e2e/test_fuzz_grpc.py)."""

import cv2
import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from vss_api.errors import PayloadTooLarge
from vss_transformers.errors import InvalidImage
from vss_transformers.images import ImageRequests


def _raw_request(name: str, datatype: str, shape: list[int], raw: bytes) -> InferRequest:
    return InferRequest(model_name="m", infer_inputs=[InferInput(name=name, shape=shape, datatype=datatype)],
                        raw_inputs=[raw], from_grpc=True)


@pytest.mark.parametrize("raw", [b"\xff\xff\xff\xff", (1000).to_bytes(4, "little") + b"\xff\xd8", b"\x01\x00"])
def test_a_bytes_tensor_whose_element_lengths_run_past_its_bytes_is_an_invalid_image(raw: bytes) -> None:
    with pytest.raises(InvalidImage, match="input 'image' does not match its shape"):
        ImageRequests().parse_v2(_raw_request("image", "BYTES", [1], raw))


@pytest.mark.parametrize("shape", [[], [3], [4, 3], [1, 1, 1, 1, 3]])
def test_pixels_with_neither_hw3_nor_nhw3_axes_are_an_invalid_image(shape: list[int]) -> None:
    raw = bytes(int(np.prod(shape)) if shape else 1)
    with pytest.raises(InvalidImage, match=r"pixels must have shape \[N, H, W, 3\] or \[H, W, 3\]"):
        ImageRequests().parse_v2(_raw_request("pixels", "UINT8", shape, raw))


def test_pixels_of_one_image_are_a_batch_of_one() -> None:
    batch = ImageRequests().parse_v2(_raw_request("pixels", "UINT8", [2, 2, 3], bytes(12)))
    assert isinstance(batch, np.ndarray) and batch.shape == (1, 2, 2, 3)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming width x height, and no image data: the limits must refuse it
    from the header, since decoding would fail (or allocate) only later."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr + b"\0\0\0\0"


def test_a_batch_whose_headers_hold_more_pixels_together_than_the_limit_is_refused_before_any_is_decoded(
) -> None:
    requests = ImageRequests(max_pixels=100 * 100, max_batch_pixels=3 * 100 * 100)
    with pytest.raises(PayloadTooLarge, match=r"30400 pixels together.*transformer\.maxBatchPixels"):
        requests.decode([_png_claiming(100, 100)] * 3 + [_png_claiming(20, 20)])


def test_one_image_over_its_own_limit_is_refused_from_its_header_naming_the_spec_field() -> None:
    with pytest.raises(PayloadTooLarge, match=r"transformer\.maxImagePixels"):
        ImageRequests(max_pixels=99 * 100).decode([_png_claiming(100, 100)])


def test_raw_pixels_over_the_batch_limit_are_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="maxBatchPixels"):
        ImageRequests(max_batch_pixels=2 * 64).decode(np.zeros((3, 8, 8, 3), np.uint8))


def test_a_batch_under_both_limits_decodes() -> None:
    ok, data = cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))
    assert ok
    images, sources = ImageRequests(max_pixels=100, max_batch_pixels=200).decode([data.tobytes()] * 2)
    assert sources == [(10, 10), (10, 10)] and images[0].shape == (10, 10, 3)
