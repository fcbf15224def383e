"""What a runtime and precision do to a detector's answers: the project's detector (models/artifacts/detector.onnx)
served in-process from examples/detection.yaml with ONNX Runtime FP32 (the reference), OpenVINO FP32 and
OpenVINO BF16, on the evaluation's held-out scenes. Prints, per runtime, COCO mAP (at confidence 0.001, as
Ultralytics validates) and, on the detections the reference keeps at the example's threshold, the largest score
and box-corner differences from the reference and how many detections appear or vanish.

    python benchmarks/precision_drift.py --images 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import yaml

from benchmarks.inprocess import InProcessPipeline
from vss_models.evaluation import EVALUATION_SEED, evaluate_detector
from vss_models.scenes import generate_scene

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))


def pipeline(runtime: str, precision: str, confidence: float, work: Path) -> InProcessPipeline:
    doc = yaml.safe_load((REPO / "examples" / "detection.yaml").read_text())
    doc["spec"]["predictor"].update(runtime=runtime, precision=precision)
    doc["spec"]["transformer"]["detection"]["confidenceThreshold"] = confidence
    spec = work / f"{runtime}-{precision}-{confidence}.yaml"
    spec.write_text(yaml.safe_dump(doc))
    return InProcessPipeline.from_spec(spec, REPO / "models" / "artifacts" / "detector.onnx")


def detect(p: InProcessPipeline, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    feeds, context = p.task.prepare(image[None])
    found = p.task.postprocess(p.runtime.run(feeds), context)[0]
    return found.boxes, found.scores, found.class_ids


def drift(reference: InProcessPipeline, other: InProcessPipeline, images: int) -> tuple[float, float, int]:
    """Largest score and box differences over the reference's detections matched by class and IoU >= 0.5, and
    the detections without a match on either side."""
    worst_score = worst_box = 0.0
    unmatched = 0
    for index in range(images):
        image = generate_scene(EVALUATION_SEED, index).image
        rb, rs, rc = detect(reference, image)
        ob, os_, oc = detect(other, image)
        used: set[int] = set()
        for box, score, cls in zip(rb, rs, rc, strict=True):
            best, best_iou = -1, 0.5
            for j, (b, c) in enumerate(zip(ob, oc, strict=True)):
                if j in used or c != cls:
                    continue
                inter = np.prod(np.clip(np.minimum(box[2:], b[2:]) - np.maximum(box[:2], b[:2]), 0, None))
                iou = inter / (np.prod(box[2:] - box[:2]) + np.prod(b[2:] - b[:2]) - inter)
                if iou >= best_iou:
                    best, best_iou = j, iou
            if best < 0:
                unmatched += 1
                continue
            used.add(best)
            worst_score = max(worst_score, abs(float(score) - float(os_[best])))
            worst_box = max(worst_box, float(np.abs(box - ob[best]).max()))
        unmatched += len(ob) - len(used)
    return worst_score, worst_box, unmatched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args(argv)
    threshold = yaml.safe_load((REPO / "examples" / "detection.yaml").read_text())[
        "spec"]["transformer"]["detection"]["confidenceThreshold"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reference = pipeline(*RUNTIMES[0], threshold, work)
        print(f"detector.onnx, {args.images} held-out scenes; drift on detections at confidence {threshold}")
        print("| runtime | precision | backend | mAP50 | mAP50-95 | max score diff | max box diff px | unmatched |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for runtime, precision in RUNTIMES:
            low = pipeline(runtime, precision, 0.001, work)
            ev = evaluate_detector(lambda image, p=low: detect(p, image), n_images=args.images)
            score, box, unmatched = drift(reference, pipeline(runtime, precision, threshold, work), args.images)
            print(f"| {runtime} | {precision} | {low.runtime.info.backend} {','.join(low.runtime.info.providers)} "
                  f"| {ev.map50:.4f} | {ev.map50_95:.4f} | {score:.4f} | {box:.2f} | {unmatched} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
