"""Stream soak (issue 14): one `vss stream` worker process on a live 720p 15 fps camera (the generated clip looped
by GStreamer's RTSP server on loopback, paced to real time) against the shipped detector served by a real
`vss run examples/detection.yaml`, for `--minutes`. Every 10 s: the worker's resident memory (VmRSS), and from its
/metrics the frames decoded, inferred, dropped and unanswered, the events and the lag. Prints a table per minute,
then the RSS after the warm-up and at the end and their ratio; exits 1 when RSS grew more than `--max_growth`
(10 %), when the worker exited, or when it stopped inferring.

    python benchmarks/stream_soak.py                 # 10 minutes
    python benchmarks/stream_soak.py --minutes 1     # a quick look

JSON report: build/reports/stream-soak.json. Needs Debian's python3 with GStreamer's RTSP server (`make system`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.servers import REPO, free_port, proc_memory_kb, start_vss_run
from tests.support.rtsp_server import RtspServer

SAMPLE_EVERY_S = 10.0
METRIC = re.compile(r'^(vss_stream_\w+)\{([^}]*)\} ([0-9.e+-]+)$')


def scrape(port: int) -> dict[str, float]:
    """vss_stream_* samples keyed `name{stage|kind}`; empty when the worker does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if (match := METRIC.match(line)) is None:
            continue
        name, labels, value = match.groups()
        extra = ",".join(p.split("=")[1].strip('"') for p in labels.split(",") if not p.startswith("stream="))
        found[f"{name}{{{extra}}}" if extra else name] = float(value)
    return found


def stream_file(directory: Path, url: str) -> Path:
    doc = {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSStream", "metadata": {"name": "soak"},
           "spec": {"source": {"url": url}, "model": {"name": "detector"},
                    "sampling": {"fps": 5, "mode": "live", "maxLagSeconds": 2},
                    "analytics": {"lines": [{"name": "road", "from": [0, 0.55], "to": [1, 0.55]}],
                                  "zones": [{"name": "kerb", "polygon": [[0, 0.8], [0.35, 0.8], [0.35, 1], [0, 1]],
                                             "dwellSeconds": 2}]}}}
    path = directory / "soak.yaml"
    path.write_text(json.dumps(doc))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup_s", type=float, default=60.0, help="RSS is compared from the end of this")
    parser.add_argument("--max_growth", type=float, default=0.10)
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "detection.yaml")
    args = parser.parse_args(argv)

    from vss_models.clips import crossing_clip, write_clip  # after argparse: kserve parses sys.argv on import

    logs = Path(tempfile.mkdtemp(prefix="vss-stream-soak-"))
    clip = write_clip(crossing_clip(frames=300), logs / "crossing.mp4")
    stack = start_vss_run(args.spec, "detector", logs, via_vss_run=True)
    samples: list[dict[str, Any]] = []
    failure = ""
    try:
        with RtspServer(logs) as camera:
            camera.start(clip, loop=True)
            port = free_port()
            log = (logs / "vss-stream.log").open("wb")
            spec = stream_file(logs, camera.url)
            worker = subprocess.Popen([sys.executable, "-m", "vss_cli.main", "stream", str(spec),
                                       "--model-grpc", stack.endpoints["grpc"], "--http-port", str(port)],
                                      stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
            started = time.monotonic()
            try:
                while (elapsed := time.monotonic() - started) < args.warmup_s + args.minutes * 60:
                    if worker.poll() is not None:
                        failure = f"the worker exited with {worker.returncode}; see {log.name}"
                        break
                    rss = proc_memory_kb(worker.pid).get("VmRSS", 0)
                    samples.append({"t": round(elapsed, 1), "rss_kb": rss, **scrape(port)})
                    time.sleep(SAMPLE_EVERY_S)
            finally:
                worker.terminate()
                worker.wait(timeout=30)
                log.close()
    finally:
        stack.stop()
    return report(samples, args, failure, logs)


def report(samples: list[dict[str, Any]], args: argparse.Namespace, failure: str, logs: Path) -> int:
    after = [s for s in samples if s["t"] >= args.warmup_s]
    if not after:
        print(f"no samples after the warm-up: {failure or 'too short'}", file=sys.stderr)
        return 1
    print("| t s | RSS MiB | decoded | inferred | dropped (live) | unanswered | events | lag s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in samples[::6]:
        frames = [s.get(f"vss_stream_frames_total{{{stage}}}", 0) for stage in
                  ("decoded", "inferred", "dropped", "unanswered")]
        events = sum(v for k, v in s.items() if k.startswith("vss_stream_events_total"))
        print(f"| {s['t']:.0f} | {s['rss_kb'] / 1024:.1f} | " + " | ".join(f"{n:.0f}" for n in frames)
              + f" | {events:.0f} | {s.get('vss_stream_lag_seconds', 0):.3f} |")
    first, last = after[0], after[-1]
    peak = max(s["rss_kb"] for s in after)
    growth = last["rss_kb"] / first["rss_kb"] - 1 if first["rss_kb"] else float("inf")
    minutes = (last["t"] - first["t"]) / 60
    inferred = last.get("vss_stream_frames_total{inferred}", 0) - first.get("vss_stream_frames_total{inferred}", 0)
    print(f"\nRSS after warm-up {first['rss_kb'] / 1024:.1f} MiB, at the end {last['rss_kb'] / 1024:.1f} MiB, peak "
          f"{peak / 1024:.1f} MiB: growth {growth * 100:+.1f} % over {minutes:.1f} min "
          f"(limit {args.max_growth * 100:.0f} %); {inferred:.0f} frames inferred in that time")
    out = REPO / "build" / "reports" / "stream-soak.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"minutes": minutes, "growth": growth, "samples": samples, "failure": failure,
                               "logs": str(logs)}, indent=1))
    if failure:
        print(failure, file=sys.stderr)
        return 1
    if inferred <= 0:
        print("the worker stopped inferring", file=sys.stderr)
        return 1
    return 0 if growth <= args.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
