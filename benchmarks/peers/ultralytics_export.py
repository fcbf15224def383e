"""A YOLOv8n ONNX export made offline by Ultralytics' own exporter from its model YAML (random-init weights,
nothing downloaded): the same file then serves through `vss run --model` and through the peer. Run in the
peer's virtualenv with YOLO_OFFLINE=1:

    python benchmarks/peers/ultralytics_export.py OUT_DIR     # writes OUT_DIR/yolov8n.onnx

The seed fixes the random init, so a rerun on the same versions gives the same weights."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from ultralytics import YOLO


def export(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml", task="detect")  # builds the network from the YAML: no weights fetched
    written = Path(model.export(format="onnx", imgsz=640, simplify=True, dynamic=False, opset=17))
    target = out / "yolov8n.onnx"
    shutil.move(str(written), target)
    return target


if __name__ == "__main__":
    print(export(Path(sys.argv[1])))
