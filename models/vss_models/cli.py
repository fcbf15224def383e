"""`vss models build` and `vss models evaluate`: train the shipped models, and measure them held-out."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("models/artifacts")
EVALUATED = ("detector", "classifier", "detector-int8", "classifier-int8", "timeseries")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="vss models", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build", help="train, export and quantize the detector and classifier, build the time-series models"
    )
    build.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"model directory (default {DEFAULT_DIR})")
    build.add_argument("--quick", action="store_true", help="a reduced recipe that trains in a few minutes (CI)")
    build.add_argument("--cache", type=Path, default=None, help="build cache (default ~/.cache/vss/models)")
    build.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads per training process (default 1 in parallel)"
    )
    build.add_argument(
        "--sequential", action="store_true", help="train the two models one after the other in this process"
    )
    evaluate = commands.add_parser("evaluate", help="held-out metrics of a model directory, as JSON")
    evaluate.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"model directory (default {DEFAULT_DIR})")
    evaluate.add_argument("--images", type=int, default=500, help="held-out scenes for the detector")
    evaluate.add_argument("--classifier-images", type=int, default=1200, help="held-out classifier images")
    evaluate.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    evaluate.add_argument(
        "--only",
        action="append",
        choices=EVALUATED,
        help="evaluate just this model family (repeatable; default: all)",
    )
    return root


def run_build(args: argparse.Namespace) -> dict[str, Any]:
    # torch is imported only here: evaluation and serving work without it.
    from vss_models.build import build

    report = build(
        args.out,
        quick=args.quick,
        cache_dir=args.cache,
        threads=args.threads,
        parallel=False if args.sequential else None,
    )
    return {key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(report).items()}


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from vss_models.evaluation import evaluate_classifier, evaluate_detector
    from vss_models.inference import OnnxClassifier, OnnxDetector
    from vss_models.timeseries.evaluation import evaluate as evaluate_timeseries

    chosen = args.only or EVALUATED
    result: dict[str, Any] = {}
    if "detector" in chosen:
        detector = OnnxDetector.load(args.dir / "detector.onnx", threads=args.threads)
        result["detector"] = dataclasses.asdict(evaluate_detector(detector, n_images=args.images))
    if "classifier" in chosen:
        classifier = OnnxClassifier.load(args.dir / "classifier.onnx", threads=args.threads)
        result["classifier"] = dataclasses.asdict(evaluate_classifier(classifier, n=args.classifier_images))
    if "detector-int8" in chosen or "classifier-int8" in chosen:
        result |= evaluate_int8(args, chosen)
    if "timeseries" in chosen:
        result["timeseries"] = evaluate_timeseries(args.dir, Path("examples"))  # through `vss run` processes
    return result


def evaluate_int8(args: argparse.Namespace, chosen: tuple[str, ...]) -> dict[str, Any]:
    """Each INT8 model's held-out quality next to its FP32 source's, measured in the same run, and the two
    models' latency alternated run by run on the same input (one and two ONNX Runtime threads)."""
    from vss_models.evaluation import evaluate_classifier, evaluate_detector
    from vss_models.inference import OnnxClassifier, OnnxDetector
    from vss_models.patterns import generate_pattern_image
    from vss_models.quantize import classifier_feed, compare_speed, detector_feed
    from vss_models.scenes import generate_scene

    result: dict[str, Any] = {}
    frame = generate_scene(0, 0).image
    if "detector-int8" in chosen:
        fp32, int8 = args.dir / "detector.onnx", args.dir / "detector.int8.onnx"
        quality = {
            name: evaluate_detector(OnnxDetector.load(path, threads=args.threads), n_images=args.images)
            for name, path in (("fp32", fp32), ("int8", int8))
        }
        feeds = (detector_feed(frame, 640, 640), detector_feed(frame, 640, 384))  # square, and 16:9 rectangle
        speeds = [compare_speed(fp32, int8, feed, threads) for feed in feeds for threads in (1, 2)]
        result["detector-int8"] = {
            "map50": {name: q.map50 for name, q in quality.items()},
            "map50_95": {name: q.map50_95 for name, q in quality.items()},
            "map50_drop": quality["fp32"].map50 - quality["int8"].map50,
            "map50_95_drop": quality["fp32"].map50_95 - quality["int8"].map50_95,
            "ap50_int8": quality["int8"].ap50,
            "images": args.images,
            "speed": [speed.row() for speed in speeds],
        }
    if "classifier-int8" in chosen:
        fp32, int8 = args.dir / "classifier.onnx", args.dir / "classifier.int8.onnx"
        scores = {
            name: evaluate_classifier(OnnxClassifier.load(path, threads=args.threads), n=args.classifier_images)
            for name, path in (("fp32", fp32), ("int8", int8))
        }
        one = classifier_feed(generate_pattern_image(0, 0).image)
        eight = {"images": one["images"].repeat(8, axis=0)}
        speeds = [compare_speed(fp32, int8, feed, threads) for feed in (one, eight) for threads in (1, 2)]
        result["classifier-int8"] = {
            "top1": {name: s.top1 for name, s in scores.items()},
            "top5": {name: s.top5 for name, s in scores.items()},
            "top1_drop": scores["fp32"].top1 - scores["int8"].top1,
            "images": args.classifier_images,
            "speed": [speed.row() for speed in speeds],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run_build(args) if args.command == "build" else run_evaluate(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
