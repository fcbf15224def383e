"""`python -m vss_models.timeseries build|evaluate|verify`: train the time-series models into a model
directory, measure them through `vss run`, or check their sha256 against the manifests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_DIR = Path("models/artifacts")
EXAMPLES = Path("examples")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m vss_models.timeseries", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="train and export anomaly.onnx and the two forecasters")
    build.add_argument("--out", type=Path, default=DEFAULT_DIR)
    build.add_argument("--quick", action="store_true", help="seconds of training, for tests and CI")
    build.add_argument("--threads", type=int, default=1, help="torch threads")
    evaluate = commands.add_parser("evaluate", help="held-out figures through `vss run`, as JSON")
    evaluate.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    evaluate.add_argument("--examples", type=Path, default=EXAMPLES)
    evaluate.add_argument("--quick", action="store_true", help="the quick recipe's data sizes")
    verify = commands.add_parser("verify", help="check the models' sha256 against their manifests")
    verify.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "build":
        from vss_models.timeseries.build import build

        result = build(args.out, quick=args.quick, threads=args.threads)
        print(json.dumps({"anomaly": str(result.anomaly),
                          "forecasters": {k: str(v) for k, v in result.forecasters.items()},
                          "seconds": round(result.seconds, 1)}, indent=2))
        return 0
    if args.command == "evaluate":
        from vss_models.timeseries.evaluation import evaluate

        print(json.dumps(evaluate(args.dir, args.examples, quick=args.quick), indent=2))
        return 0
    from vss_models.timeseries.manifests import verify as check

    wrong = check(args.dir)
    print("\n".join(f"sha256 mismatch: {name}" for name in wrong) or "all models match their manifests")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
