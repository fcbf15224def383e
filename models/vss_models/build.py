"""Build the shipped models: train both, export them, and record what was built in a manifest.

Each model is cached by a content hash of its configuration, the source of every module that shapes its
weights, and the torch version: running the same build twice trains once, and changing one model's recipe
retrains only that model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any, Final, TextIO

import cv2
import torch

from vss_api.progress import Progress
from vss_models import classifier, detector, export, inference, patterns, scenes, training
from vss_models.classifier import (
    ClassifierConfig,
    export_classifier_onnx,
    export_classifier_torchscript,
    train_classifier,
)
from vss_models.detector import DetectorConfig, export_detector, train_detector
from vss_models.evaluation import EVALUATION_SEED
from vss_models.training import TrainingLog
from vss_transformers import letterbox

MANIFEST: Final = "manifest.json"
DETECTOR_FILES: Final = ("detector.onnx",)
CLASSIFIER_FILES: Final = ("classifier.onnx", "classifier.pt")
INT8_FILES: Final = ("detector.int8.onnx", "classifier.int8.onnx")
TIMESERIES_FILES: Final = ("anomaly.onnx", "forecast-lstm.onnx", "forecast-transformer.onnx")
TIMESERIES_MANIFESTS: Final = ("anomaly.manifest.json", "forecasting.manifest.json")
ARTIFACTS: Final = DETECTOR_FILES + CLASSIFIER_FILES + INT8_FILES + TIMESERIES_FILES
# The modules whose source decides each model's weights; editing one invalidates that model's cache. The
# detector trains on the serving letterbox's geometry and padding, so editing it retrains the detector.
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
    timeseries_seconds: float
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


QUANTIZE_SOURCE: Final = Path(__file__).with_name("quantize.py")  # read, not imported: onnxruntime.quantization
TIMESERIES_SOURCES: Final = Path(__file__).with_name("timeseries")


def build_hash(config: BuildConfig, quick: bool = False) -> str:
    """Hash of the whole build: both vision recipes, the INT8 step's source, the time-series build."""
    detector_key = recipe_hash(config.detector, DETECTOR_SOURCES)
    classifier_key = recipe_hash(config.classifier, CLASSIFIER_SOURCES)
    quantize_key = hashlib.sha256(QUANTIZE_SOURCE.read_bytes()).hexdigest()[:16]
    parts = f"{detector_key}:{classifier_key}:{quantize_key}:{timeseries_key(quick)}"
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def timeseries_key(quick: bool) -> str:
    """Cache key of the time-series build: every source file of `vss_models.timeseries`, torch, `quick`."""
    digest = hashlib.sha256(f"quick={quick}:torch={torch.__version__}".encode())
    for source in sorted(TIMESERIES_SOURCES.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return "timeseries-" + digest.hexdigest()[:16]


def timeseries_models(cache: Path, key: str, quick: bool, log: bool) -> tuple[dict[str, Any], bool]:
    """The cache record of `vss_models.timeseries.build` (anomaly.onnx, forecast-*.onnx and their own
    manifests), built now if missing, and whether it was cached."""
    record = read_manifest(cache / key, TIMESERIES_FILES)
    if record is not None:
        return record, True
    from vss_models.timeseries.build import build as build_timeseries

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        staging = Path(scratch) / key
        seconds = build_timeseries(staging, quick=quick, log=log).seconds
        return store(cache, key, staging, TIMESERIES_FILES, {"seconds": round(seconds, 1)}), False


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store(cache: Path, key: str, staging: Path, files: tuple[str, ...], facts: dict[str, Any]) -> dict[str, Any]:
    """Record `files` in `staging` (sha256, size) with `facts` as its manifest, and move it to `cache/key`."""
    record = (
        {"key": key}
        | facts
        | {
            "files": {
                name: {"sha256": file_sha256(staging / name), "bytes": (staging / name).stat().st_size}
                for name in files
            }
        }
    )
    (staging / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    if (cache / key).exists():
        shutil.rmtree(cache / key)
    staging.rename(cache / key)
    return record


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


# What a training prints every 20 steps: `detector epoch 0 step 20/96 loss 3.210 box 1.204 ... 5s`.
_TRAINING_LINE = re.compile(
    r"^(?P<model>\w+) epoch (?P<epoch>\d+) step (?P<step>\d+)/(?P<total>\d+) loss (?P<loss>\S+)")


class TrainingProgress(io.StringIO):
    """Stands in for stdout during one training: its step lines become progress lines on stderr, with the epoch
    and an estimate of what is left (a line per epoch at least; more often on a terminal); anything else goes
    to stderr as it was. The training modules' source is part of each model's recipe hash, so the reporting
    lives here: changing it never retrains a model."""

    def __init__(self, epochs: int, stream: TextIO | None = None) -> None:
        super().__init__()
        self._epochs = epochs
        self._stream = stream if stream is not None else sys.stderr
        self._pending = ""
        self._progress: Progress | None = None
        self._epoch: int | None = None

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        found = _TRAINING_LINE.match(line)
        if found is None:
            if line.strip():
                print(line, file=self._stream, flush=True)
            return
        if self._progress is None:
            self._progress = Progress(found["model"], int(found["total"]), stream=self._stream)
        epoch = int(found["epoch"])
        self._progress.update(int(found["step"]), f"epoch {epoch + 1}/{self._epochs}, loss {found['loss']}",
                              force=epoch != self._epoch)
        self._epoch = epoch


def _train_into(config: DetectorConfig | ClassifierConfig, directory: Path, log: bool) -> TrainingLog:
    """Train one model and export its files into `directory` (runs in a worker process when in parallel)."""
    with contextlib.redirect_stdout(TrainingProgress(config.epochs)) if log else contextlib.nullcontext():
        return _train_and_export(config, directory, log)


def _train_and_export(config: DetectorConfig | ClassifierConfig, directory: Path, log: bool) -> TrainingLog:
    if isinstance(config, DetectorConfig):
        detector_net, training_log = train_detector(config, log=log)
        export_detector(detector_net, config.classes, directory / "detector.onnx")
        return training_log
    classifier_net, training_log = train_classifier(config, log=log)
    export_classifier_onnx(classifier_net, config.classes, directory / "classifier.onnx")
    export_classifier_torchscript(classifier_net, config.classes, directory / "classifier.pt")
    return training_log


def _train_worker(config: DetectorConfig | ClassifierConfig, directory: Path, threads: int, log: bool) -> TrainingLog:
    torch.set_num_threads(threads)
    return _train_into(config, directory, log)


@dataclass(frozen=True)
class _Job:
    kind: str
    key: str
    files: tuple[str, ...]
    config: DetectorConfig | ClassifierConfig


def train_missing(
    cache: Path, jobs: list[_Job], threads: int | None, parallel: bool, log: bool
) -> tuple[dict[str, dict[str, Any]], bool]:
    """Each job's cache record, training the missing ones: side by side in one worker process each (torch on
    `threads`, default 1, per process) when `parallel`, else one after the other in this process; and
    whether every one came from the cache."""
    records: dict[str, dict[str, Any]] = {}
    missing = []
    for job in jobs:
        record = read_manifest(cache / job.key, job.files)
        if record is None:
            missing.append(job)
        else:
            records[job.kind] = record
    if not missing:
        return records, True
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        stagings = {job.kind: Path(scratch) / job.key for job in missing}
        for staging in stagings.values():
            staging.mkdir()
        if parallel and len(missing) > 1:
            per_process = threads or 1
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(len(missing), mp_context=context) as pool:
                futures = {
                    job.kind: pool.submit(_train_worker, job.config, stagings[job.kind], per_process, log)
                    for job in missing
                }
                logs = {kind: future.result() for kind, future in futures.items()}
            used = per_process
        else:
            if threads is not None:
                torch.set_num_threads(threads)
            logs = {job.kind: _train_into(job.config, stagings[job.kind], log) for job in missing}
            used = torch.get_num_threads()
        for job in missing:
            training = dataclasses.asdict(logs[job.kind]) | {"threads": used}
            records[job.kind] = store(cache, job.key, stagings[job.kind], job.files, {"training": training})
    return records, False


def quantized_variants(cache: Path, fp32_dir: Path, settings: BuildConfig) -> tuple[dict[str, Any], bool]:
    """The cache record of the INT8 forms of the FP32 models in `fp32_dir`, and whether it was cached."""
    from vss_models import quantize  # onnxruntime.quantization: loaded only when a build needs it

    sources = {name: fp32_dir / name for name in ("detector.onnx", "classifier.onnx")}
    key = "int8-" + quantize.quantized_key(sources)
    record = read_manifest(cache / key, INT8_FILES)
    if record is not None:
        return record, True
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings_of = quantize.SETTINGS
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        staging = Path(scratch) / key
        staging.mkdir()
        quantize.quantize(
            sources["detector.onnx"],
            staging / "detector.int8.onnx",
            quantize.detector_calibration(settings.detector.seed, settings_of["detector"].calibration_images),
            settings_of["detector"],
        )
        quantize.quantize(
            sources["classifier.onnx"],
            staging / "classifier.int8.onnx",
            quantize.classifier_calibration(settings.classifier.seed, settings_of["classifier"].calibration_images),
            settings_of["classifier"],
        )
        quantization = {name: dataclasses.asdict(value) for name, value in settings_of.items()}
        facts = quantization | {"seconds": round(time.perf_counter() - started, 1), "onnxruntime": ort_version()}
        return store(cache, key, staging, INT8_FILES, {"quantization": facts}), False


def ort_version() -> str:
    return version("onnxruntime-gpu")


def build(
    out_dir: Path,
    quick: bool = False,
    cache_dir: Path | None = None,
    threads: int | None = None,
    log: bool = True,
    parallel: bool | None = None,
) -> BuildReport:
    """Train and export both vision models into `out_dir` (detector.onnx, classifier.onnx, classifier.pt, their
    INT8 forms detector.int8.onnx and classifier.int8.onnx), the time-series models (anomaly.onnx,
    forecast-*.onnx with their own manifests) and manifest.json over all of them, reusing identical earlier
    builds from `out_dir` or the cache (default ~/.cache/vss/models). The two vision trainings run side by
    side in two processes when the machine has two cores or more (`parallel`, default: auto), each with torch
    on `threads` (default 1, which is also what makes the bytes reproducible); else one after the other."""
    config = QUICK if quick else FULL
    assert EVALUATION_SEED not in (config.detector.seed, config.classifier.seed), "evaluation must stay held out"
    key = build_hash(config, quick)
    manifest = read_manifest(out_dir, ARTIFACTS)
    if manifest is not None and manifest["build_hash"] == key:
        return report_from(out_dir, manifest, cached=True)
    cache = cache_dir or default_cache()
    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2
    jobs = [
        _Job("detector", "detector-" + recipe_hash(config.detector, DETECTOR_SOURCES), DETECTOR_FILES, config.detector),
        _Job(
            "classifier",
            "classifier-" + recipe_hash(config.classifier, CLASSIFIER_SOURCES),
            CLASSIFIER_FILES,
            config.classifier,
        ),
    ]
    # The three stages, each with its own lines (per epoch for the trainings) and an estimate.
    stages = Progress("vss models build", 3, every_s=0) if log else None
    if stages is not None:
        stages.update(0, "training " + " and ".join(
            f"{job.kind}{' (cached)' if read_manifest(cache / job.key, job.files) else ''}" for job in jobs))
    records, trained_cached = train_missing(cache, jobs, threads, parallel, log)
    out_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        for name in job.files:
            shutil.copyfile(cache / job.key / name, out_dir / name)
    if stages is not None:
        stages.update(1, "detector and classifier trained; quantizing them to INT8")
    int8, int8_cached = quantized_variants(cache, out_dir, config)
    for name in INT8_FILES:
        shutil.copyfile(cache / int8["key"] / name, out_dir / name)
    if stages is not None:
        stages.update(2, f"INT8 models {'cached' if int8_cached else 'quantized'}; building the time-series models")
    series, series_cached = timeseries_models(cache, timeseries_key(quick), quick, log)
    for name in TIMESERIES_FILES + TIMESERIES_MANIFESTS:
        shutil.copyfile(cache / series["key"] / name, out_dir / name)
    if stages is not None:
        stages.update(3, f"time-series models {'cached' if series_cached else 'built'}")
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
        "training": {job.kind: records[job.kind]["training"] | {"key": job.key} for job in jobs},
        "quantization": int8["quantization"] | {"key": int8["key"]},
        "timeseries": {"seconds": series["seconds"], "key": series["key"]},
        "files": {name: entry for job in jobs for name, entry in records[job.kind]["files"].items()}
        | int8["files"]
        | series["files"],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report_from(out_dir, manifest, cached=trained_cached and int8_cached and series_cached)


def report_from(out_dir: Path, manifest: dict[str, Any], cached: bool) -> BuildReport:
    return BuildReport(
        out_dir=out_dir,
        build_hash=manifest["build_hash"],
        cached=cached,
        detector_seconds=manifest["training"]["detector"]["seconds"],
        classifier_seconds=manifest["training"]["classifier"]["seconds"],
        timeseries_seconds=manifest["timeseries"]["seconds"],
        sha256={name: entry["sha256"] for name, entry in manifest["files"].items()},
        bytes={name: entry["bytes"] for name, entry in manifest["files"].items()},
    )
