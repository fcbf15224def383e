import cv2
import numpy as np
import pytest

from vss_api.errors import PayloadTooLarge
from vss_transformers.codecs import check_pixels, decode_image, encode_jpeg
from vss_transformers.errors import InvalidImage


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image[:, :, ::-1])
    assert ok
    return data.tobytes()


def test_a_jpeg_decodes_to_rgb_pixels() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 0] = 250
    decoded, source = decode_image(encode_jpeg(image, quality=95))
    assert decoded.shape == (48, 64, 3) and source == (48, 64)
    assert decoded[..., 0].mean() > 240 and decoded[..., 2].mean() < 10


def test_a_png_decodes_to_the_exact_rgb_pixels() -> None:
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    decoded, source = decode_image(_png(image))
    np.testing.assert_array_equal(decoded, image)
    assert source == (20, 30)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"),
    (b"hello, not an image", "not a JPEG or PNG"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not a readable PNG header"),
    (b"BM" + b"\x00" * 10, "not a readable BMP header"),
])
def test_bytes_that_are_not_an_image_are_rejected_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        decode_image(data)


def test_a_truncated_jpeg_is_rejected_not_half_decoded() -> None:
    data = encode_jpeg(np.full((64, 64, 3), 90, np.uint8))
    with pytest.raises(InvalidImage, match="JPEG"):
        decode_image(data[: len(data) // 2])


def test_an_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    data = encode_jpeg(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(PayloadTooLarge):
        decode_image(data, max_pixels=1000)


@pytest.mark.parametrize("ext", [".png", ".bmp"])
def test_a_small_file_that_decodes_to_a_huge_image_is_refused_from_its_header(
        ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 6000x6000 black PNG is a few KB: its size must be read from the header, never by decoding it."""
    ok, encoded = cv2.imencode(ext, np.zeros((6000, 6000, 3), np.uint8))
    assert ok
    data = encoded.tobytes()

    def no_decoding(*_: object) -> None:
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(PayloadTooLarge, match="36000000 pixels"):
        decode_image(data, max_pixels=10_000_000)


def test_a_png_header_claiming_zero_pixels_is_refused() -> None:
    data = bytearray(_png(np.zeros((4, 4, 3), np.uint8)))
    data[16:20] = (0).to_bytes(4, "big")
    with pytest.raises(InvalidImage, match="no pixels"):
        decode_image(bytes(data))


def test_pixels_must_be_uint8_hxwx3() -> None:
    with pytest.raises(InvalidImage, match="UINT8"):
        check_pixels(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InvalidImage, match=r"\[H, W, 3\]"):
        check_pixels(np.zeros((4, 4), np.uint8))


def test_a_size_hint_decodes_a_jpeg_at_a_reduced_scale_no_smaller_than_asked() -> None:
    image = np.random.default_rng(3).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    decoded, source = decode_image(encode_jpeg(image), size_hint=lambda h, w: (360, 640))
    assert source == (720, 1280)
    assert decoded.shape == (360, 640, 3)
    big, _ = decode_image(encode_jpeg(image), size_hint=lambda h, w: (500, 900))
    assert big.shape[0] >= 500 and big.shape[1] >= 900 and big.shape[0] <= 720


def test_a_size_hint_larger_than_the_source_decodes_at_full_size() -> None:
    decoded, _ = decode_image(encode_jpeg(np.zeros((40, 60, 3), np.uint8)), size_hint=lambda h, w: (400, 600))
    assert decoded.shape == (40, 60, 3)
