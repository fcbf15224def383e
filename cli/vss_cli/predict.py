"""`vss predict INPUT...`: call a served model over v2 REST and write what it answered where a person can see it:
images with their boxes, labels and scores (detection) or top-k (classification), drawn with OpenCV; plots of
the anomaly score over a series' windows and of a forecast with its interval (matplotlib). Each answer is printed
as one JSON line, exactly as the server sent it."""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import math
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SERIES_SUFFIXES = (".csv", ".npy")
MAX_WINDOWS = 256  # the series tasks' default maxBatch: windows of one request
# supervision's default ColorPalette (its annotators' colours), as BGR for OpenCV.
PALETTE = tuple((int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)) for h in (
    "a351fb", "e6194b", "3cb44b", "ffe119", "0082c8", "f58231", "911eb4", "46f0f0", "f032e6", "d2f53c",
    "fabebe", "008080", "e6beff", "aa6e28", "fffac8", "800000", "aaffc3"))

Image = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


class PredictError(Exception):
    """A request vss predict cannot make, or an answer it cannot read."""


@dataclass(frozen=True)
class Served:
    """A served model as its v2 metadata describes it."""

    url: str
    name: str
    task: str  # detection | classification | anomaly | forecasting
    steps: int = 0  # series tasks: readings per window (anomaly) or lookback (forecasting)
    features: int = 0


# --- v2 over REST ---------------------------------------------------------------------------------------

def _call(url: str, body: bytes | None = None, timeout_s: float = 60.0) -> Any:
    if urlparse(url).scheme not in ("http", "https"):
        raise PredictError(f"{url}: --url takes http://HOST:PORT or https://HOST:PORT")
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:  # noqa: S310 - http(s), checked above
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            detail = json.loads(detail).get("error", detail)
        raise PredictError(f"{url}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PredictError(f"{url}: {exc} (is `vss run` serving there?)") from exc


def task_of(metadata: Mapping[str, Any]) -> str:
    """The task from the outputs a model's v2 metadata lists."""
    outputs = {o.get("name") for o in metadata.get("outputs") or []}
    if "boxes" in outputs:
        return "detection"
    if "anomaly_score" in outputs:
        return "anomaly"
    if {"predictions", "lower", "upper"} <= outputs:
        return "forecasting"
    if {"labels", "scores"} <= outputs:
        return "classification"
    raise PredictError(f"model {metadata.get('name')!r} answers with {sorted(str(o) for o in outputs)}, which is "
                       "none of the tasks vss predict draws")


def discover(url: str, model: str | None, timeout_s: float = 60.0) -> Served:
    base = url.rstrip("/")
    if model is None:
        names = _call(f"{base}/v1/models", timeout_s=timeout_s).get("models") or []
        if len(names) != 1:
            raise PredictError(f"{base} serves {names}: name one with --model")
        model = str(names[0])
    metadata = _call(f"{base}/v2/models/{model}", timeout_s=timeout_s)
    task = task_of(metadata)
    if task in ("anomaly", "forecasting"):
        series = next((i for i in metadata.get("inputs") or [] if i.get("name") == "series"), None)
        if series is None or len(series.get("shape", [])) != 3:
            raise PredictError(f"model {model!r} lists no [N, steps, features] input 'series': {metadata}")
        return Served(base, model, task, int(series["shape"][1]), int(series["shape"][2]))
    return Served(base, model, task)


def infer(served: Served, inputs: list[dict[str, Any]], timeout_s: float = 60.0) -> dict[str, Any]:
    body = json.dumps({"inputs": inputs}).encode()
    reply: dict[str, Any] = _call(f"{served.url}/v2/models/{served.name}/infer", body, timeout_s)
    return reply


def outputs_of(reply: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Each output of a v2 JSON answer as an array of its shape (BYTES as str)."""
    arrays = {}
    for output in reply.get("outputs") or []:
        data = output.get("data", [])
        dtype = object if output.get("datatype") == "BYTES" else None
        arrays[str(output["name"])] = np.asarray(data, dtype=dtype).reshape(output.get("shape", [len(data)]))
    return arrays


# --- drawing -----------------------------------------------------------------------------------------------

def _font(image: Image) -> tuple[float, int]:
    scale = max(0.5, min(image.shape[:2]) / 900)
    return scale, max(1, round(scale * 2))


def _label(image: Image, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """`text` on a filled box whose bottom-left corner is (x, y), inside the image."""
    import cv2

    scale, thickness = _font(image)
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, thickness * 2)
    x = min(max(0, x), max(0, image.shape[1] - w - 2 * pad))
    y = max(y, h + baseline + 2 * pad)
    cv2.rectangle(image, (x, y - h - baseline - 2 * pad), (x + w + 2 * pad, y), colour, cv2.FILLED)
    luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + pad, y - baseline - pad), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness,
                cv2.LINE_AA)


def draw_detections(image: Image, boxes: F32, labels: Sequence[str], scores: F32,
                    class_ids: Sequence[int]) -> Image:
    """A copy of the BGR `image` with each box, its label and score in the colour of its class."""
    import cv2

    out = image.copy()
    thickness = max(2, round(min(image.shape[:2]) / 300))
    for box, label, score, class_id in zip(boxes, labels, scores, class_ids, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        colour = PALETTE[int(class_id) % len(PALETTE)]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        _label(out, f"{label} {float(score):.2f}", x1, y1, colour)
    return out


def draw_top_k(image: Image, labels: Sequence[str], scores: Sequence[float]) -> Image:
    """A copy of the BGR `image` with its top-k classes, best first, in the top-left corner."""
    out = image.copy()
    scale, _ = _font(image)
    line = round(34 * scale) + 8
    for rank, (label, score) in enumerate(zip(labels, scores, strict=True)):
        colour = PALETTE[rank % len(PALETTE)] if rank == 0 else (48, 48, 48)
        _label(out, f"{rank + 1}. {label} {float(score):.3f}", 4, 4 + line * (rank + 1), colour)
    return out


def annotate_image(served: Served, path: Path, out_dir: Path, timeout_s: float = 60.0
                   ) -> tuple[dict[str, Any], Path]:
    """Call the model with the image at `path`; its answer, and the annotated image written under `out_dir`."""
    import cv2

    payload = path.read_bytes()
    decoded = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise PredictError(f"{path}: not an image OpenCV can decode")
    image: Image = np.asarray(decoded, np.uint8)
    reply = infer(served, [{"name": "image", "datatype": "BYTES", "shape": [1],
                            "data": [base64.b64encode(payload).decode()]}], timeout_s)
    outputs = outputs_of(reply)
    if served.task == "detection":
        n = int(outputs["num_detections"][0])
        drawn = draw_detections(image, outputs["boxes"][0][:n].astype(np.float32), list(outputs["labels"][0][:n]),
                                outputs["scores"][0][:n].astype(np.float32), list(outputs["class_ids"][0][:n]))
    else:
        drawn = draw_top_k(image, list(outputs["labels"][0]), list(outputs["scores"][0]))
    suffix = ".png" if path.suffix.lower() == ".png" else ".jpg"
    target = out_dir / f"{path.stem}.annotated{suffix}"
    if not cv2.imwrite(str(target), drawn):
        raise PredictError(f"{target}: OpenCV could not write it")
    return reply, target


# --- series ------------------------------------------------------------------------------------------------

def read_series(path: Path) -> tuple[F32, list[str] | None]:
    """Readings [T, F] from a CSV (a header row of feature names, or none) or an NPY file; the names if given."""
    if path.suffix.lower() == ".npy":
        values = np.load(path, allow_pickle=False)
        if values.ndim != 2:
            raise PredictError(f"{path}: an NPY series is [readings, features], got shape {list(values.shape)}")
        return values.astype(np.float32), None
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        raise PredictError(f"{path}: empty")
    names: list[str] | None = None
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        names, rows = [v.strip() for v in rows[0]], rows[1:]
    try:
        values = np.asarray([[float(v) for v in r] for r in rows], np.float32)
    except ValueError as exc:
        raise PredictError(f"{path}: every row after the header must be numbers: {exc}") from exc
    if values.ndim != 2 or not len(values):
        raise PredictError(f"{path}: no rows of readings of equal length")
    return values, names


def _series_inputs(windows: F32, names: list[str] | None) -> list[dict[str, Any]]:
    inputs: list[dict[str, Any]] = [{"name": "series", "datatype": "FP32", "shape": list(windows.shape),
                                     "data": windows.reshape(-1).tolist()}]
    if names:
        inputs.append({"name": "features", "datatype": "BYTES", "shape": [len(names)], "data": names})
    return inputs


def window_starts(length: int, window: int, most: int = MAX_WINDOWS) -> list[int]:
    """Starts of the windows slid over `length` readings: evenly, at most `most`, the last ending at the end."""
    if length < window:
        return []
    stride = max(1, math.ceil((length - window) / max(1, most - 1)))
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts[-most:]


def flagged_spans(starts: Sequence[int], window: int, flagged: Sequence[bool]) -> list[tuple[int, int]]:
    """The readings covered by windows judged anomalous, as merged [first, last] spans."""
    spans: list[tuple[int, int]] = []
    for start, is_anomaly in zip(starts, flagged, strict=True):
        if not is_anomaly:
            continue
        if spans and start <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], start + window - 1))
        else:
            spans.append((start, start + window - 1))
    return spans


def plot_anomaly(values: F32, names: Sequence[str], starts: Sequence[int], window: int, scores: F32,
                 flagged: Sequence[bool], title: str, target: Path) -> Path:
    """Each feature over time, the readings of windows judged anomalous shaded, and below the anomaly score of the
    window ending at each reading."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = values.shape[1]
    fig, axes = plt.subplots(count + 1, 1, sharex=True, figsize=(11, 1.4 * (count + 1) + 1),
                             gridspec_kw={"height_ratios": [1] * count + [1.4]})
    t = np.arange(len(values))
    for i, ax in enumerate(axes[:-1]):
        ax.plot(t, values[:, i], lw=0.9, color="#1f77b4")
        ax.set_ylabel(names[i], rotation=0, ha="right", fontsize=8)
        ax.tick_params(labelsize=7)
    ends = np.asarray(starts) + window - 1
    for first, last in flagged_spans(starts, window, flagged):
        for ax in axes:
            ax.axvspan(first, last, color="#d62728", alpha=0.12, lw=0)
    score_ax = axes[-1]
    score_ax.plot(ends, scores, marker="o" if len(ends) < 40 else None, ms=3, lw=1.2, color="#444444")
    score_ax.scatter(ends[np.asarray(flagged, bool)], scores[np.asarray(flagged, bool)], s=14, color="#d62728",
                     zorder=3, label="is_anomaly")
    score_ax.set_ylim(0, 1.05)
    score_ax.set_ylabel("anomaly_score\n(window ending here)", rotation=0, ha="right", fontsize=8)
    score_ax.set_xlabel("reading")
    score_ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def plot_forecast(history: F32, names: Sequence[str], predicted: F32, lower: F32, upper: F32, title: str,
                  target: Path) -> Path:
    """Per feature: the readings the model read, then its forecast and the interval around it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = history.shape[1]
    fig, axes = plt.subplots(count, 1, sharex=True, figsize=(10, 1.6 * count + 1), squeeze=False)
    past = np.arange(-len(history) + 1, 1)
    future = np.arange(1, len(predicted) + 1)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(past, history[:, i], lw=1.0, color="#1f77b4", label="readings")
        joined_t = np.concatenate([[0], future])
        ax.plot(joined_t, np.concatenate([[history[-1, i]], predicted[:, i]]), lw=1.4, color="#ff7f0e",
                label="forecast")
        ax.fill_between(future, lower[:, i], upper[:, i], color="#ff7f0e", alpha=0.25, lw=0, label="interval")
        ax.axvline(0.5, color="#888888", lw=0.6, ls="--")
        ax.set_ylabel(names[i], rotation=0, ha="right", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(loc="upper left", fontsize=7, ncols=3)
    axes[-1, 0].set_xlabel("step (0 = the last reading sent)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def predict_series(served: Served, path: Path, out_dir: Path, timeout_s: float = 60.0
                   ) -> tuple[dict[str, Any], Path]:
    values, names = read_series(path)
    if values.shape[1] != served.features:
        raise PredictError(f"{path}: {values.shape[1]} features a row; model {served.name!r} reads "
                           f"{served.features}")
    labels = names or [f"feature {i}" for i in range(values.shape[1])]
    if len(values) < served.steps:
        raise PredictError(f"{path}: {len(values)} readings; model {served.name!r} reads windows of {served.steps}")
    if served.task == "anomaly":
        starts = window_starts(len(values), served.steps)
        windows = np.stack([values[s:s + served.steps] for s in starts])
        reply = infer(served, _series_inputs(windows, names), timeout_s)
        outputs = outputs_of(reply)
        scores = outputs["anomaly_score"].astype(np.float32).reshape(-1)
        flagged = [bool(v) for v in outputs["is_anomaly"].reshape(-1)]
        title = (f"{served.name}: anomaly_score of {len(starts)} windows of {served.steps} readings over {path.name}"
                 f" ({sum(flagged)} anomalous)")
        target = plot_anomaly(values, labels, starts, served.steps, scores, flagged, title,
                              out_dir / f"{path.stem}.anomaly.png")
        return reply, target
    history = values[-served.steps:]
    reply = infer(served, _series_inputs(history[None], names), timeout_s)
    outputs = outputs_of(reply)
    predicted, lower, upper = (outputs[k][0].astype(np.float32) for k in ("predictions", "lower", "upper"))
    title = f"{served.name}: {len(predicted)}-step forecast of {path.name} from its last {served.steps} readings"
    return reply, plot_forecast(history, labels, predicted, lower, upper, title, out_dir / f"{path.stem}.forecast.png")


# --- the command -------------------------------------------------------------------------------------------

def predict(inputs: Sequence[Path], *, url: str, model: str | None, out_dir: Path, timeout_s: float = 60.0) -> int:
    """One request per input; each answer printed as a JSON line, the file written for it named on stderr."""
    try:
        served = discover(url, model, timeout_s)
        wanted = IMAGE_SUFFIXES if served.task in ("detection", "classification") else SERIES_SUFFIXES
        wrong = [str(p) for p in inputs if p.suffix.lower() not in wanted]
        if wrong:
            raise PredictError(f"model {served.name!r} ({served.task}) takes {', '.join(wanted)} files, not {wrong}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in inputs:
            if not path.is_file():
                raise PredictError(f"{path}: no such file")
            if served.task in ("detection", "classification"):
                reply, written = annotate_image(served, path, out_dir, timeout_s)
            else:
                reply, written = predict_series(served, path, out_dir, timeout_s)
            print(json.dumps(reply), flush=True)
            print(f"wrote {written}", file=sys.stderr, flush=True)
    except PredictError as exc:
        print(f"vss: {exc}", file=sys.stderr)
        return 1
    return 0
