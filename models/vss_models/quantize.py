"""INT8 variants of the shipped ONNX models: static quantization with `onnxruntime.quantization`, calibrated
on generated data from the training distribution (never the evaluation seed), and a speed comparison.

QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into integer kernels), weights
INT8 per output channel, activations UINT8 per tensor. Activation ranges, chosen per model on held-out
accuracy: the detector takes min/max averaged over the calibration batches (percentile ranges cost it 0.005
mAP@0.5); the classifier takes the 99.99th percentile of each histogram (min/max cost it 1.1 points of
top-1, and keeping its pooling and linear head in float did not win them back; clipping outliers did).
The convolutions *and* the SiLU/Add/Concat/Resize between them are quantized: quantizing only the
convolutions left a dequantize-SiLU-quantize round trip after each one, and measured slower than FP32 here.
What stays float: the detector's final 1x1 head convolutions and everything after them (box decoding,
sigmoid scores), and the classifier's softmax. Box coordinates run to 640 and scores to 1 in one output
tensor; one UINT8 scale over both would leave scores a step of 2.5.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from vss_models.inference import imagenet_normalise
from vss_models.patterns import generate_pattern_image
from vss_models.scenes import generate_scene
from vss_transformers.letterbox import letterbox

QUANTIZED_OPS: Final = ("Conv", "Gemm", "Mul", "Sigmoid", "Add", "Concat", "Resize")
# Calibration draws from the training seeds at indices past any training set, so it is neither a training
# image nor a held-out one.
CALIBRATION_OFFSET: Final = 1_000_000

Feed = dict[str, NDArray[np.float32]]


@dataclass(frozen=True)
class QuantizationSettings:
    ranges: str  # "minmax": averaged per batch; "percentile": 99.99th of the histogram
    calibration_images: int = 64
    quant_format: str = "QDQ"
    weights: str = "int8 per channel"
    activations: str = "uint8 per tensor"

    def calibration(self) -> tuple[CalibrationMethod, dict[str, object]]:
        if self.ranges == "minmax":
            return CalibrationMethod.MinMax, {"CalibMovingAverage": True}
        if self.ranges == "percentile":
            return CalibrationMethod.Percentile, {"CalibPercentile": 99.99}
        raise ValueError(f"unknown calibration ranges {self.ranges!r}")


SETTINGS: Final = {
    "detector": QuantizationSettings(ranges="minmax"),
    "classifier": QuantizationSettings(ranges="percentile"),
}


class _Batches(CalibrationDataReader):
    def __init__(self, feeds: Iterator[Feed]) -> None:
        self._feeds = feeds

    def get_next(self) -> Feed | None:
        return next(self._feeds, None)


def detector_feed(image: NDArray[np.uint8], width: int = 640, height: int = 640) -> Feed:
    canvas, _ = letterbox(image, (height, width))
    return {"images": canvas.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)}


def classifier_feed(image: NDArray[np.uint8]) -> Feed:
    return {"images": imagenet_normalise(image)[None]}


def detector_calibration(seed: int, n: int) -> Iterator[Feed]:
    """Generated scenes letterboxed to 640x640 as the exporter's `imgsz` says."""
    for index in range(n):
        yield detector_feed(generate_scene(seed, CALIBRATION_OFFSET + index).image)


def classifier_calibration(seed: int, n: int) -> Iterator[Feed]:
    for index in range(n):
        yield classifier_feed(generate_pattern_image(seed, CALIBRATION_OFFSET + index).image)


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes kept in float: anything outside the network body (`/net/...`: the export wrapper's decoding),
    and the last 1x1 convolution of each detection head branch (`*_heads.K.1/Conv`)."""
    kept = []
    for node in model.graph.node:
        parts = node.name.split("/")
        head_output = "_heads." in node.name and len(parts) > 2 and parts[-2].endswith(".1")
        if not node.name.startswith("/net/") or head_output:
            kept.append(node.name)
    return kept


def quantize(source: Path, target: Path, calibration: Iterator[Feed], settings: QuantizationSettings) -> None:
    """Write the INT8 QDQ form of `source` to `target`; metadata (names, imgsz, ...) is carried over."""
    model = onnx.load(str(source))
    method, options = settings.calibration()
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Shape inference and constant folding first, as onnxruntime.quantization recommends; the symbolic
        # pass cannot follow the dynamic H/W arithmetic of the head, ONNX's own inference can.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=float_nodes(model),
            calibrate_method=method,
            extra_options=options,
        )
    quantized = onnx.load(str(target))
    present = {prop.key for prop in quantized.metadata_props}
    for prop in model.metadata_props:
        if prop.key not in present:
            quantized.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(quantized, str(target))


def quantized_key(sources: Mapping[str, Path]) -> str:
    """Cache key of the INT8 stage: the FP32 files' bytes, this module, the onnxruntime version, settings."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode())
        digest.update(sources[name].read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update(ort.__version__.encode())
    digest.update(repr(SETTINGS).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SpeedComparison:
    """Median latency of one run of `feed` on each model, alternated run by run so load drifts hit both."""

    input_shape: tuple[int, ...]
    threads: int
    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms

    def row(self) -> dict[str, object]:
        return {
            "input_shape": list(self.input_shape),
            "threads": self.threads,
            "fp32_ms": round(self.fp32_ms, 2),
            "int8_ms": round(self.int8_ms, 2),
            "speedup": round(self.speedup, 2),
        }


def _timed_session(path: Path, threads: int) -> ort.InferenceSession:
    """CPU session as the predictor opens it: `threads` intra-op threads that sleep, not spin, when idle
    (spinning threads of the idle model would steal the other's cores between runs)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_speed(fp32: Path, int8: Path, feed: Feed, threads: int = 1, rounds: int = 30) -> SpeedComparison:
    sessions = [_timed_session(path, threads) for path in (fp32, int8)]
    timings: list[list[float]] = [[], []]
    for session in sessions:
        for _ in range(3):
            session.run(None, feed)
    for _ in range(rounds):
        for session, samples in zip(sessions, timings, strict=True):
            started = time.perf_counter()
            session.run(None, feed)
            samples.append((time.perf_counter() - started) * 1000)
    shape = tuple(next(iter(feed.values())).shape)
    return SpeedComparison(shape, threads, statistics.median(timings[0]), statistics.median(timings[1]))
