"""Build the shipped models: train both, export them, and record what was built in a manifest.

Each model is cached by a content hash of its configuration, the source of every module that shapes its
weights, and the torch version: running the same build twice trains once, and changing one model's recipe
retrains only that model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import cv2
import torch

from vss_models import classifier, detector, export, inference, letterbox, patterns, scenes, training
from vss_models.classifier import (
    ClassifierConfig,
    export_classifier_onnx,
    export_classifier_torchscript,
    train_classifier,
)
from vss_models.detector import DetectorConfig, export_detector, train_detector
from vss_models.evaluation import EVALUATION_SEED
from vss_models.training import TrainingLog

MANIFEST: Final = "manifest.json"
DETECTOR_FILES: Final = ("detector.onnx",)
CLASSIFIER_FILES: Final = ("classifier.onnx", "classifier.pt")
ARTIFACTS: Final = DETECTOR_FILES + CLASSIFIER_FILES
# The modules whose source decides each model's weights; editing one invalidates that model's cache.
DETECTOR_SOURCES: Final = (scenes, letterbox, training, export, detector)
CLASSIFIER_SOURCES: Final = (scenes, patterns, inference, training, export, classifier)


@dataclass(frozen=True)
class BuildConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


FULL: Final = BuildConfig()
# Proves the pipeline end to end (generate, train, export, verify) in a couple of CPU minutes; the models
# it makes are far from the full ones' quality.
QUICK: Final = BuildConfig(
    detector=DetectorConfig(train_scenes=64, epochs=2, widths=(8, 16, 16, 32)),
    classifier=ClassifierConfig(train_images=256, epochs=2, widths=(8, 16, 16, 32)),
)


@dataclass(frozen=True)
class BuildReport:
    out_dir: Path
    build_hash: str
    cached: bool
    detector_seconds: float
    classifier_seconds: float
    sha256: dict[str, str]
    bytes: dict[str, int]


def recipe_hash(config: object, sources: tuple[ModuleType, ...]) -> str:
    """Content hash of one model's recipe: its configuration, the sources that shape it, the torch version."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())  # type: ignore[call-overload]
    digest.update(torch.__version__.encode())
    for module in sources:
        assert module.__file__ is not None
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def build_hash(config: BuildConfig) -> str:
    detector_key = recipe_hash(config.detector, DETECTOR_SOURCES)
    classifier_key = recipe_hash(config.classifier, CLASSIFIER_SOURCES)
    return hashlib.sha256(f"{detector_key}:{classifier_key}".encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(directory: Path, expected_files: tuple[str, ...]) -> dict[str, Any] | None:
    """The manifest in `directory` if every file it lists is there unchanged, else None."""
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
        if set(manifest["files"]) != set(expected_files):
            return None
        for name, entry in manifest["files"].items():
            if file_sha256(directory / name) != entry["sha256"]:
                return None
    except (OSError, ValueError, KeyError):
        return None
    return manifest


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vss" / "models"


def trained(
    cache: Path, key: str, files: tuple[str, ...], train: Callable[[Path], TrainingLog]
) -> tuple[dict[str, Any], bool]:
    """One model's cached build `cache/<key>`, made by `train(staging_dir)` first if it is missing."""
    directory = cache / key
    record = read_manifest(directory, files)
    if record is not None:
        return record, True
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
        staging = Path(scratch) / key
        staging.mkdir()
        log = train(staging)
        record = {
            "key": key,
            "training": dataclasses.asdict(log) | {"threads": torch.get_num_threads()},
            "files": {
                name: {"sha256": file_sha256(staging / name), "bytes": (staging / name).stat().st_size}
                for name in files
            },
        }
        (staging / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    return record, False


def build(
    out_dir: Path, quick: bool = False, cache_dir: Path | None = None, threads: int | None = None, log: bool = True
) -> BuildReport:
    """Train and export both models into `out_dir` (detector.onnx, classifier.onnx, classifier.pt,
    manifest.json), reusing identical earlier builds from `out_dir` or the cache (default
    ~/.cache/vss/models). `threads` caps torch's CPU threads (default: torch's choice)."""
    config = QUICK if quick else FULL
    assert EVALUATION_SEED not in (config.detector.seed, config.classifier.seed), "evaluation must stay held out"
    key = build_hash(config)
    manifest = read_manifest(out_dir, ARTIFACTS)
    if manifest is not None and manifest["build_hash"] == key:
        return report_from(out_dir, manifest, cached=True)
    if threads is not None:
        torch.set_num_threads(threads)
    cache = cache_dir or default_cache()

    def train_detector_into(directory: Path) -> TrainingLog:
        net, training_log = train_detector(config.detector, log=log)
        export_detector(net, config.detector.classes, directory / "detector.onnx")
        return training_log

    def train_classifier_into(directory: Path) -> TrainingLog:
        net, training_log = train_classifier(config.classifier, log=log)
        export_classifier_onnx(net, config.classifier.classes, directory / "classifier.onnx")
        export_classifier_torchscript(net, config.classifier.classes, directory / "classifier.pt")
        return training_log

    detector_key = "detector-" + recipe_hash(config.detector, DETECTOR_SOURCES)
    classifier_key = "classifier-" + recipe_hash(config.classifier, CLASSIFIER_SOURCES)
    detector_record, detector_cached = trained(cache, detector_key, DETECTOR_FILES, train_detector_into)
    classifier_record, classifier_cached = trained(cache, classifier_key, CLASSIFIER_FILES, train_classifier_into)

    out_dir.mkdir(parents=True, exist_ok=True)
    for directory, files in ((cache / detector_key, DETECTOR_FILES), (cache / classifier_key, CLASSIFIER_FILES)):
        for name in files:
            shutil.copyfile(directory / name, out_dir / name)
    command = "vss models build --out models/artifacts" + (" --quick" if quick else "")
    manifest = {
        "build_hash": key,
        "config": "quick" if quick else "full",
        "command": command,
        "command_without_vss_cli": command.replace("vss models", "python -m vss_models.cli"),
        # The recipe is exact; the bytes come out the same only with the same library versions, CPU kind
        # and thread count, since the order of float reductions differs between them.
        "reproducibility": "same recipe on any machine; identical bytes with identical versions, CPU, threads",
        "settings": dataclasses.asdict(config),
        "versions": {package: version(package) for package in ("torch", "onnx", "onnxruntime-gpu", "numpy")}
        | {"opencv": str(cv2.__version__), "python": platform.python_version()},
        "cpu": platform.processor() or platform.machine(),
        "training": {
            "detector": detector_record["training"] | {"key": detector_key},
            "classifier": classifier_record["training"] | {"key": classifier_key},
        },
        "files": detector_record["files"] | classifier_record["files"],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report_from(out_dir, manifest, cached=detector_cached and classifier_cached)


def report_from(out_dir: Path, manifest: dict[str, Any], cached: bool) -> BuildReport:
    return BuildReport(
        out_dir=out_dir,
        build_hash=manifest["build_hash"],
        cached=cached,
        detector_seconds=manifest["training"]["detector"]["seconds"],
        classifier_seconds=manifest["training"]["classifier"]["seconds"],
        sha256={name: entry["sha256"] for name, entry in manifest["files"].items()},
        bytes={name: entry["bytes"] for name, entry in manifest["files"].items()},
    )
