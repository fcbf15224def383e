"""ImageRequests.parse_v2 on tensors whose contents do not fit them: each is an InvalidImage (400 /
INVALID_ARGUMENT) naming the input, never another exception (found by tests/e2e/test_fuzz_grpc.py)."""

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

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
