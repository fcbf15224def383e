"""What a user would write instead of a serving platform: Ultralytics' own `predict` behind a small FastAPI
app. Runs in the peer's virtualenv (ultralytics_env.py), never in the project's: Ultralytics is AGPL-3.0.

    YOLO_MODEL=model.onnx YOLO_OFFLINE=1 python -m uvicorn ultralytics_app:app --port 8300 --workers 1

POST /predict with the encoded image as the body (image/jpeg) -> {"boxes": [[x1, y1, x2, y2], ...],
"scores": [...], "classes": [...], "labels": [...]}, in source pixels. `predict`'s own defaults (conf 0.25,
iou 0.7, imgsz from the export); `?conf=` overrides the threshold. GET /health is 200 once the model is up."""

from __future__ import annotations

import os

import cv2
import numpy as np
from fastapi import FastAPI, Request
from ultralytics import YOLO

model = YOLO(os.environ["YOLO_MODEL"], task="detect")
app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request, conf: float = 0.25) -> dict[str, object]:
    data = await request.body()
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)  # BGR, as cv2.imread
    result = model.predict(image, conf=conf, verbose=False)[0]
    boxes = result.boxes
    return {"boxes": boxes.xyxy.tolist(), "scores": boxes.conf.tolist(),
            "classes": [int(c) for c in boxes.cls.tolist()],
            "labels": [result.names[int(c)] for c in boxes.cls.tolist()]}
