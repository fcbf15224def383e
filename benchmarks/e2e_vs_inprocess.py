"""The served detection path against ONNX Runtime in-process, same model, same 1280x720 JPEG frames,
same preprocessing (the transformer's own code), same run: throughput and p50/p95 at concurrency 1
and 8, through `vss run` over v2 gRPC and v2 REST. Also the model alone at the chosen input shape, the
floor under every latency. Targets (issue 3): served >= 0.9x in-process throughput at c=8, <= 3 ms
added p50 at c=1. Prints ratios measured in this run; asserts nothing about absolute timings.

    python benchmarks/e2e_vs_inprocess.py                        # 48 recorded requests per cell
    python benchmarks/e2e_vs_inprocess.py --requests 8 --warmup 2  # a quick look
    python benchmarks/e2e_vs_inprocess.py --detector models/artifacts/detector.onnx

The full side-by-side suite (KServe docs' patterns, classification, c=1/4/16) is benchmarks/suite.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import suite


def main(argv: list[str] | None = None) -> int:
    defaults = ["--tasks", "detection", "--targets", "m,a,b-grpc,b-rest", "--concurrency", "1,8",
                "--name", "e2e_vs_inprocess"]
    cfg = suite.parse_args([*defaults, *(sys.argv[1:] if argv is None else argv)])
    cfg.baselines = ("a",)
    suite.run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
