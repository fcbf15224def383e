import numpy as np
import onnxruntime as ort
import pytest

from tests.fixtures.onnx_graphs import mean_colour_classifier
from vss_api.serving_flags import Normalization
from vss_predictors.prelude import add_uint8_nhwc_prelude, image_input

IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _session(model: object) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]


def test_the_prelude_gives_the_same_outputs_as_normalising_in_numpy() -> None:
    model = mean_colour_classifier()
    pixels = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    mean = np.array(IMAGENET.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET.std, np.float32).reshape(1, 3, 1, 1)
    floats = ((pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0) - mean) / std
    expected = _session(model).run(None, {"images": floats})[0]
    wrapped = add_uint8_nhwc_prelude(model, IMAGENET)
    got = _session(wrapped).run(None, {"images": pixels})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_wrapped_model_takes_uint8_nhwc_under_the_same_input_name() -> None:
    wrapped = _session(add_uint8_nhwc_prelude(mean_colour_classifier(), IMAGENET))
    (only,) = wrapped.get_inputs()
    assert only.name == "images" and only.type == "tensor(uint8)" and only.shape[1:] == [224, 224, 3]


def test_a_model_without_a_float_image_input_gets_no_prelude() -> None:
    model = mean_colour_classifier()
    model.graph.input[0].type.tensor_type.elem_type = 2  # UINT8
    assert image_input(model) is None
    with pytest.raises(ValueError, match="no single float NCHW image input"):
        add_uint8_nhwc_prelude(model, IMAGENET)


@pytest.mark.parametrize("text", ["1,2:3", "a,b,c:1,1,1", "0,0,0:1,0,1", "nonsense"])
def test_a_malformed_normalize_flag_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="normalize"):
        Normalization.parse(text)


def test_normalize_flag_round_trips() -> None:
    assert Normalization.parse(IMAGENET.format()) == IMAGENET
