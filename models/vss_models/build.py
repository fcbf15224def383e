"""Build the shipped models: train both, export them, and record what was built in a manifest.

Builds are cached by a content hash of the configuration and the source of every module that shapes the
weights, so running the same build twice trains once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import cv2
import torch

from vss_models import classifier, detector, export, letterbox, patterns, scenes, training
from vss_models.classifier import (
    ClassifierConfig,
    export_classifier_onnx,
    export_classifier_torchscript,
    train_classifier,
)
from vss_models.detector import DetectorConfig, export_detector, train_detector
from vss_models.evaluation import EVALUATION_SEED

ARTIFACTS: Final = ("detector.onnx", "classifier.onnx", "classifier.pt")
MANIFEST: Final = "manifest.json"
# The modules whose source decides the weights; editing any of them invalidates the cache.
WEIGHT_SOURCES: Final = (scenes, patterns, letterbox, training, export, detector, classifier)


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


def build_hash(config: BuildConfig) -> str:
    """Content hash of the recipe: configuration, weight-deciding sources and the torch version."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    digest.update(torch.__version__.encode())
    for module in WEIGHT_SOURCES:
        assert module.__file__ is not None
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reproducing_command(out_dir: Path, quick: bool) -> str:
    return f"vss models build --out {out_dir}" + (" --quick" if quick else "")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a complete build in `directory`, or None if absent or any file differs from it."""
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
        for name, entry in manifest["files"].items():
            if file_sha256(directory / name) != entry["sha256"]:
                return None
    except (OSError, ValueError, KeyError):
        return None
    return manifest


def report_from(out_dir: Path, manifest: dict[str, Any], cached: bool) -> BuildReport:
    return BuildReport(
        out_dir=out_dir,
        build_hash=manifest["build_hash"],
        cached=cached,
        detector_seconds=manifest["training"]["detector_seconds"],
        classifier_seconds=manifest["training"]["classifier_seconds"],
        sha256={name: entry["sha256"] for name, entry in manifest["files"].items()},
        bytes={name: entry["bytes"] for name, entry in manifest["files"].items()},
    )


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vss" / "models"


def build(
    out_dir: Path, quick: bool = False, cache_dir: Path | None = None, threads: int | None = None, log: bool = True
) -> BuildReport:
    """Train and export both models into `out_dir` (detector.onnx, classifier.onnx, classifier.pt,
    manifest.json), or reuse an identical earlier build from `out_dir` or the cache (default
    ~/.cache/vss/models). `threads` caps torch's CPU threads (default: torch's choice)."""
    config = QUICK if quick else FULL
    assert EVALUATION_SEED not in (config.detector.seed, config.classifier.seed), "evaluation must stay held out"
    key = build_hash(config)
    manifest = read_manifest(out_dir)
    if manifest is not None and manifest["build_hash"] == key:
        return report_from(out_dir, manifest, cached=True)
    cached = (cache_dir or default_cache()) / key
    manifest = read_manifest(cached)
    if manifest is None or manifest["build_hash"] != key:
        manifest = train_into(cached, config, key, quick, threads, log)
        cache_hit = False
    else:
        cache_hit = True
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (*ARTIFACTS, MANIFEST):
        shutil.copyfile(cached / name, out_dir / name)
    return report_from(out_dir, manifest, cached=cache_hit)


def train_into(
    directory: Path, config: BuildConfig, key: str, quick: bool, threads: int | None, log: bool
) -> dict[str, Any]:
    """Train both models and write them with their manifest into `directory`, atomically."""
    if threads is not None:
        torch.set_num_threads(threads)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
        staging = Path(scratch)
        started = time.perf_counter()
        detector_net, detector_log = train_detector(config.detector, log=log)
        export_detector(detector_net, config.detector.classes, staging / "detector.onnx")
        classifier_net, classifier_log = train_classifier(config.classifier, log=log)
        export_classifier_onnx(classifier_net, config.classifier.classes, staging / "classifier.onnx")
        export_classifier_torchscript(classifier_net, config.classifier.classes, staging / "classifier.pt")
        manifest = {
            "build_hash": key,
            "config": "quick" if quick else "full",
            "command": reproducing_command(Path("models/artifacts"), quick),
            # The recipe is exact; the bytes are reproduced only with the same library versions, CPU kind and
            # thread count, since float reductions differ between them.
            "command_without_vss_cli": "python -m vss_models.cli build --out models/artifacts"
            + (" --quick" if quick else ""),
            "settings": dataclasses.asdict(config),
            "versions": {package: version(package) for package in ("torch", "onnx", "onnxruntime-gpu", "numpy")}
            | {"opencv": str(cv2.__version__)},
            "training": {
                "detector_seconds": round(detector_log.seconds, 1),
                "detector_data_seconds": round(detector_log.data_seconds, 1),
                "detector_steps": detector_log.steps,
                "classifier_seconds": round(classifier_log.seconds, 1),
                "classifier_data_seconds": round(classifier_log.data_seconds, 1),
                "classifier_steps": classifier_log.steps,
                "total_seconds": round(time.perf_counter() - started, 1),
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
            },
            "files": {
                name: {"sha256": file_sha256(staging / name), "bytes": (staging / name).stat().st_size}
                for name in ARTIFACTS
            },
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
        staging.mkdir()  # TemporaryDirectory cleans up the path it made
    return manifest
