"""The quick build trains, exports and records loadable models, and a repeat build is served from cache."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vss_models.build import ARTIFACTS, MANIFEST, QUICK, build, build_hash  # noqa: E402
from vss_models.inference import OnnxClassifier, OnnxDetector  # noqa: E402
from vss_models.patterns import PATTERN_CLASSES, generate_pattern_image  # noqa: E402
from vss_models.scenes import DETECTION_CLASSES, generate_scene  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_quick_build_writes_loadable_models_and_a_manifest_and_rebuilds_from_cache(tmp_path: Path) -> None:
    report = build(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache", threads=2, log=False)
    out = tmp_path / "out"
    assert not report.cached and report.build_hash == build_hash(QUICK)
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == set(ARTIFACTS)
    for name in ARTIFACTS:
        assert manifest["files"][name]["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert manifest["command"] == "vss models build --out models/artifacts --quick"

    detector = OnnxDetector.load(out / "detector.onnx", threads=1)
    assert detector.names == DETECTION_CLASSES
    boxes, scores, class_ids = detector(generate_scene(0, 0).image)
    assert boxes.shape == (len(scores), 4) and len(class_ids) == len(scores)

    classifier = OnnxClassifier.load(out / "classifier.onnx", threads=1)
    ranking = classifier(generate_pattern_image(0, 0).image)
    assert sorted(ranking) == list(range(len(PATTERN_CLASSES)))
    extra = {"names": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.15 marks torch.jit deprecated
        scripted = torch.jit.load(str(out / "classifier.pt"), _extra_files=extra)
    assert json.loads(extra["names"]) == list(PATTERN_CLASSES)
    image = generate_pattern_image(0, 1).image
    with torch.no_grad():
        from_script = scripted(torch.from_numpy(classifier_input(image)))[0].numpy()
    np.testing.assert_allclose(from_script, classifier.probabilities([image])[0], rtol=1e-3, atol=1e-4)

    started = time.perf_counter()
    again = build(tmp_path / "elsewhere", quick=True, cache_dir=tmp_path / "cache", log=False)
    assert again.cached and time.perf_counter() - started < 10
    assert again.sha256 == report.sha256
    assert build(out, quick=True, cache_dir=tmp_path / "empty-cache", log=False).cached  # out_dir itself


def classifier_input(image: np.ndarray) -> np.ndarray:
    from vss_models.inference import imagenet_normalise

    return imagenet_normalise(image)[None]
