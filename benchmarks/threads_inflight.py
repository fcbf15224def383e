"""ONNX Runtime's intra-op threads against the predictor's batches in flight, for the detector as `vss run`
serves it (one process on the CPU): req/s, p50 and p95 over v2 gRPC at c=1 and c=8, one server per setting,
the same 1280x720 JPEG frames. The suite writes the spec and frames this reads (run `suite.py` first).

    python benchmarks/threads_inflight.py --settings default:2,1:2,default:1,1:3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from benchmarks.loadgen import TargetSpec, grpc_sender, run_load
from benchmarks.servers import start_vss_run

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=HERE / ".cache" / "detection.yaml")
    parser.add_argument("--frames", type=Path, default=HERE / ".cache" / "frames")
    parser.add_argument("--settings", default="default:2,1:2,default:1,1:3",
                        help="THREADS:IN_FLIGHT pairs; THREADS 'default' leaves ONNX Runtime's own count")
    parser.add_argument("--requests", type=int, default=48, help="recorded requests at c=8 (half at c=1)")
    args = parser.parse_args(argv)
    base = yaml.safe_load(args.spec.read_text())
    name = base["metadata"]["name"]
    frames = [p.read_bytes() for p in sorted(args.frames.glob("frame_*.jpg"))][:8]
    logs = HERE / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for setting in args.settings.split(","):
        threads, in_flight = setting.split(":")
        doc = yaml.safe_load(yaml.safe_dump(base))
        if threads != "default":
            doc["spec"]["predictor"]["threads"] = int(threads)
        doc["spec"]["predictor"].setdefault("batching", {})["maxInFlight"] = int(in_flight)
        path = logs / f"{args.spec.stem}-threads-{threads}-inflight-{in_flight}.yaml"
        path.write_text(yaml.safe_dump(doc))
        stack = start_vss_run(path, name, logs)
        try:
            make = grpc_sender(TargetSpec("b", stack.endpoints["grpc"], name, ("num_detections",)), frames)
            cells = []
            for c, n in ((1, args.requests // 2), (8, args.requests)):
                result = run_load(make, frames, concurrency=c, requests=n, warmup=max(3, c), max_seconds=300)
                lat = sorted(result["latencies_s"])
                p95 = lat[int(0.95 * (len(lat) - 1))]
                cells.append(f"c={c} {len(lat) / result['wall_s']:.2f} req/s p50 {statistics.median(lat) * 1e3:.0f} "
                             f"ms p95 {p95 * 1e3:.0f} ms")
            print(f"threads={threads} in-flight={in_flight}: " + " | ".join(cells), flush=True)
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
