"""The KServe docs' custom image transformer (`python/custom_transformer/model.py` in kserve/kserve, the
"Deploy Transformer with InferenceService" guide), for a YOLO detector and an ImageNet classifier.

As in the docs: the client sends v1 JSON with base64 images (`{"instances": [{"image": {"b64": ...}}]}`);
the synchronous `preprocess` decodes each with Pillow and turns it into a normalised float32 CHW tensor
(classification: the docs' Resize(256), CenterCrop(224), ToTensor, Normalize; detection: the 640x640
letterbox of Ultralytics' examples); it sends `{"instances": [{"data": tensor.tolist()}]}` with
`--predictor_protocol v1`, or a v2 `InferRequest` with binary FP32 contents with `--predictor_protocol
grpc-v2`; KServe's `Model.predict` makes the call; `postprocess` decodes the answer (detection: YOLOv8
decode and OpenCV's batched NMS, as Ultralytics' ONNX Runtime example does; classification: softmax, top 5).

    python benchmarks/baselines/kserve_docs_transformer.py --model_name yolo --task detection \
        --predictor_host 127.0.0.1:8085 --predictor_protocol v1 --http_port 8080 --grpc_port 8081
"""

from __future__ import annotations

import argparse
import ast
import base64
import io
from typing import Any

import cv2
import numpy as np
from kserve import InferInput, InferRequest, InferResponse, Model, ModelServer, model_server
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def classification_transform(image: Image.Image) -> np.ndarray:
    """Resize(256) on the short side, CenterCrop(224), ToTensor, Normalize: the docs' pipeline."""
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    tensor = np.asarray(image, dtype=np.float32) / 255.0
    tensor = (tensor - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(tensor.transpose(2, 0, 1))


def letterbox_transform(image: Image.Image, size: int = 640) -> tuple[np.ndarray, float, int, int]:
    """The square letterbox of Ultralytics' examples: fit, centre on grey 114, scale to 0..1, CHW."""
    w, h = image.size
    r = min(size / w, size / h)
    nw, nh = round(w * r), round(h * r)
    canvas = Image.new("RGB", (size, size), (114, 114, 114))
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas.paste(image.resize((nw, nh), Image.Resampling.BILINEAR), (left, top))
    tensor = np.asarray(canvas, dtype=np.float32) / 255.0
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)), r, left, top


def yolo_objects(output: np.ndarray, r: float, left: int, top: int, names: list[str],
                 conf: float = 0.5, iou: float = 0.4) -> list[dict[str, Any]]:
    """One image's [4+nc, A] output → objects in original pixels (Ultralytics' ONNX Runtime example)."""
    preds = output.T
    scores = preds[:, 4:]
    class_ids = scores.argmax(axis=1)
    best = scores[np.arange(len(class_ids)), class_ids]
    keep = best > conf
    boxes, best, class_ids = preds[keep, :4], best[keep], class_ids[keep]
    xywh = np.column_stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
                            boxes[:, 2], boxes[:, 3]])
    chosen = cv2.dnn.NMSBoxesBatched(xywh.tolist(), best.tolist(), class_ids.tolist(), conf, iou)
    objects = []
    for i in np.asarray(chosen, dtype=np.int64).reshape(-1):
        x, y, w, h = xywh[i]
        x1, y1 = (x - left) / r, (y - top) / r
        cid = int(class_ids[i])
        objects.append({"class": names[cid] if cid < len(names) else str(cid), "confidence": float(best[i]),
                        "bbox": [float(x1), float(y1), float(x1 + w / r), float(y1 + h / r)]})
    return objects


class ImageTransformer(Model):
    def __init__(self, name: str, task: str, names: list[str]) -> None:
        super().__init__(name)
        self.task = task
        self.names = names
        self.ready = True

    def preprocess(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
                   ) -> dict[str, Any] | InferRequest:
        # Input follows the TensorFlow V1 HTTP API for binary values
        images = [Image.open(io.BytesIO(base64.b64decode(instance["image"]["b64"]))).convert("RGB")
                  for instance in payload["instances"]]
        if self.task == "classification":
            tensors = np.asarray([classification_transform(image) for image in images])
        else:
            boxed = [letterbox_transform(image) for image in images]
            tensors = np.asarray([b[0] for b in boxed])
            # Per-request state rides in the request's headers dict, as the docs' predictor does with
            # "request-type"; KServe forwards only its whitelisted headers to the predictor.
            assert headers is not None
            headers["x-letterbox"] = repr([b[1:] for b in boxed])
        if self.predictor_config.predictor_protocol == "grpc-v2":
            infer_input = InferInput(name="images", shape=list(tensors.shape), datatype="FP32")
            infer_input.set_data_from_numpy(tensors, binary_data=True)
            return InferRequest(model_name=self.name, infer_inputs=[infer_input])
        return {"instances": [{"data": tensor.tolist()} for tensor in tensors]}

    def postprocess(self, response: dict[str, Any] | InferResponse, headers: dict[str, str] | None = None,
                    response_headers: dict[str, str] | None = None) -> dict[str, Any]:
        if isinstance(response, InferResponse):
            output = response.outputs[0].as_numpy()
        else:
            output = np.asarray(response["predictions"], dtype=np.float32)
        if self.task == "classification":
            e = np.exp(output - output.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
            top = np.argsort(-probs, axis=1)[:, :5]
            return {"predictions": [[{"class": self.names[int(c)] if int(c) < len(self.names) else str(c),
                                      "confidence": float(p[c])} for c in row]
                                    for p, row in zip(probs, top, strict=True)]}
        assert headers is not None
        geometry = ast.literal_eval(headers["x-letterbox"])
        return {"predictions": [{"objects": yolo_objects(out, r, left, top, self.names)}
                                for out, (r, left, top) in zip(output, geometry, strict=True)]}


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--task", choices=["detection", "classification"], default="detection")
    parser.add_argument("--names", default="", help="class names, a Python literal dict or list")
    args, _ = parser.parse_known_args()
    names_value = ast.literal_eval(args.names) if args.names else []
    names = [names_value[k] for k in sorted(names_value)] if isinstance(names_value, dict) else list(names_value)
    model = ImageTransformer(args.model_name, args.task, names)
    ModelServer().start([model])


if __name__ == "__main__":
    main()
