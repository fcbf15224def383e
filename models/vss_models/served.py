"""Held-out evaluation through the served path: `vss run` processes on loopback, called with tritonclient
over v2 REST, scored by the same evaluators as in-process inference.

    python -m vss_models.served detector --images 500
    python -m vss_models.served classifier --images 1200
    python -m vss_models.served detector --file detector.int8.onnx
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from numpy.typing import NDArray

from vss_models.evaluation import evaluate_classifier, evaluate_detector
from vss_models.launch import vss_run

REPO = Path(__file__).resolve().parents[2]
# Ultralytics' validation settings, so the served figures compare with mAP as it is usually reported.
EVAL_DETECTION = {"confidenceThreshold": 0.001, "iouThreshold": 0.7, "maxDetections": 300}

VSSMODEL = """\
apiVersion: serving.vss.ai/v1alpha1
kind: VSSModel
metadata: {{name: {name}}}
spec:
  task: {task}
  version: v1
  versions: [{{name: v1, storageUri: {path}}}]
  transformer: {{{task}: {params}}}
"""


@contextmanager
def served(task: str, model: Path, params: Mapping[str, object], deadline_s: float = 300) -> Iterator[str]:
    """`vss run` of one model on free ports; yields the REST address, stops it with SIGTERM."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "eval.yaml"
        spec.write_text(VSSMODEL.format(name="eval", task=task, path=model.resolve(), params=json.dumps(params)))
        with vss_run(spec, Path(tmp) / "vss-run.log", deadline_s) as endpoint:
            yield endpoint.url


def _infer(client: httpclient.InferenceServerClient, image: NDArray[np.uint8]) -> httpclient.InferResult:
    tensor = httpclient.InferInput("pixels", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(np.ascontiguousarray(image))
    return client.infer("eval", [tensor])


def evaluate_served_detector(model: Path, images: int) -> dict[str, object]:
    with served("detection", model, EVAL_DETECTION) as address:
        client = httpclient.InferenceServerClient(address)

        def predict(image: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int32]]:
            result = _infer(client, image)
            n = int(result.as_numpy("num_detections")[0])
            return (
                result.as_numpy("boxes")[0][:n],
                result.as_numpy("scores")[0][:n],
                result.as_numpy("class_ids")[0][:n],
            )

        return asdict(evaluate_detector(predict, n_images=images))


def evaluate_served_classifier(model: Path, images: int) -> dict[str, object]:
    with served("classification", model, {"inputSize": 224, "resizeSize": 224, "topK": 5}) as address:
        client = httpclient.InferenceServerClient(address)

        def predict(image: NDArray[np.uint8]) -> list[int]:
            return [int(i) for i in _infer(client, image).as_numpy("class_ids")[0]]

        return asdict(evaluate_classifier(predict, n=images))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["detector", "classifier"])
    parser.add_argument("--dir", type=Path, default=REPO / "models" / "artifacts")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--file", help="model file in --dir (default: <model>.onnx; e.g. <model>.int8.onnx)")
    args = parser.parse_args(argv)
    path = args.dir / (args.file or f"{args.model}.onnx")
    if args.model == "detector":
        report = evaluate_served_detector(path, args.images)
    else:
        report = evaluate_served_classifier(path, args.images)
    print(json.dumps({"path": "served (vss run, v2 REST)", "file": path.name, args.model: report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
