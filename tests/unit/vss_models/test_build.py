"""The quick build trains, exports and records loadable models, and a repeat build is served from cache."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vss_models.build import ARTIFACTS, MANIFEST, QUICK, build, build_hash
from vss_models.inference import OnnxClassifier, OnnxDetector, class_names, onnx_session
from vss_models.patterns import PATTERN_CLASSES, generate_pattern_image
from vss_models.scenes import DETECTION_CLASSES, generate_scene


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_quick_build_writes_loadable_models_and_a_manifest_and_rebuilds_from_cache(tmp_path: Path) -> None:
    report = build(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache", log=False, parallel=True)
    out = tmp_path / "out"
    assert not report.cached and report.build_hash == build_hash(QUICK, quick=True)
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == set(ARTIFACTS)
    for name in ARTIFACTS:
        assert manifest["files"][name]["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert manifest["command"] == "vss models build --out models/artifacts --quick"

    detector = OnnxDetector.load(out / "detector.onnx", threads=1)
    assert detector.names == DETECTION_CLASSES
    boxes, scores, class_ids = detector(generate_scene(0, 0).image)
    assert boxes.shape == (len(scores), 4) and len(class_ids) == len(scores)

    for name in ("detector", "classifier"):  # the INT8 forms keep the interface and the metadata
        fp32, int8 = (onnx_session(out / f"{name}{suffix}.onnx", 1) for suffix in ("", ".int8"))
        assert [i.shape for i in int8.get_inputs()] == [i.shape for i in fp32.get_inputs()]
        assert class_names(int8) == class_names(fp32)
    assert manifest["quantization"]["classifier"]["ranges"] == "percentile"
    assert manifest["training"]["detector"]["threads"] == 1  # one thread per training process

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


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_training_side_by_side_gives_the_same_bytes_as_one_after_the_other_on_one_thread(tmp_path: Path) -> None:
    side_by_side = build(tmp_path / "a", quick=True, cache_dir=tmp_path / "cache-a", log=False, parallel=True)
    threads = torch.get_num_threads()
    try:
        in_turn = build(
            tmp_path / "b", quick=True, cache_dir=tmp_path / "cache-b", threads=1, log=False, parallel=False
        )
    finally:
        torch.set_num_threads(threads)  # the sequential build set it for this whole process
    assert not side_by_side.cached and not in_turn.cached
    # TorchScript archives carry a random serialization id: compare classifier.pt by its tensors instead
    assert {k: v for k, v in side_by_side.sha256.items() if k != "classifier.pt"} == {
        k: v for k, v in in_turn.sha256.items() if k != "classifier.pt"
    }
    assert torchscript_tensors(tmp_path / "a" / "classifier.pt") == torchscript_tensors(
        tmp_path / "b" / "classifier.pt"
    )


def torchscript_tensors(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        tensors = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist() if "/data/" in name}
    assert tensors, f"{path} holds no tensor records"
    return tensors
