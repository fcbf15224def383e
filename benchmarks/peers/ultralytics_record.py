"""Ultralytics' own answers on a detector and a folder of JPEG frames, as JSON: what the parity test
(tests/e2e/test_ultralytics_parity.py) compares the served path with, recorded once so CI needs no
Ultralytics. Runs in the peer's virtualenv (ultralytics_env.py), offline (YOLO_OFFLINE=1):

    python benchmarks/peers/ultralytics_record.py MODEL.onnx FRAMES_DIR OUT.json

Each frame is read with cv2.imread and given to `YOLO(MODEL).predict` with its defaults (conf 0.25, iou 0.7,
imgsz from the export), as `yolo predict` would."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import ultralytics
from ultralytics import YOLO


def record(model_path: Path, frames: Path) -> dict[str, object]:
    model = YOLO(str(model_path), task="detect")
    answers = {}
    for frame in sorted(frames.glob("*.jpg")):
        result = model.predict(cv2.imread(str(frame)), verbose=False)[0]
        answers[frame.name] = {"boxes": [[round(v, 3) for v in box] for box in result.boxes.xyxy.tolist()],
                               "scores": [round(v, 5) for v in result.boxes.conf.tolist()],
                               "classes": [int(c) for c in result.boxes.cls.tolist()],
                               "input_shape": list(result.orig_shape)}
    return {"ultralytics": ultralytics.__version__, "model": model_path.name,
            "predict": {"conf": 0.25, "iou": 0.7}, "frames": answers}


if __name__ == "__main__":
    Path(sys.argv[3]).write_text(json.dumps(record(Path(sys.argv[1]), Path(sys.argv[2])), indent=1) + "\n")
