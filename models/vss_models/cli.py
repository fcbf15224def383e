"""`vss models build` and `vss models evaluate`: train the shipped models, and measure them held-out."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("models/artifacts")
EVALUATED = ("detector", "classifier", "timeseries")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="vss models", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="train and export detector.onnx, classifier.onnx, classifier.pt")
    build.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"model directory (default {DEFAULT_DIR})")
    build.add_argument("--quick", action="store_true", help="a reduced recipe that trains in a few minutes (CI)")
    build.add_argument("--cache", type=Path, default=None, help="build cache (default ~/.cache/vss/models)")
    build.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
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

    report = build(args.out, quick=args.quick, cache_dir=args.cache, threads=args.threads)
    result = {
        key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(report).items()
    }
    from vss_models.timeseries.build import build as build_timeseries  # anomaly.onnx, forecast-*.onnx

    result["timeseries_seconds"] = round(build_timeseries(args.out, quick=args.quick, log=False).seconds, 1)
    return result


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
    if "timeseries" in chosen:
        result["timeseries"] = evaluate_timeseries(args.dir, Path("examples"))  # through `vss run` processes
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run_build(args) if args.command == "build" else run_evaluate(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
