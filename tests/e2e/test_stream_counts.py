"""A VSSStream worker on a generated clip with known trajectories, its every frame inferred by the shipped
detector served by a real `vss run examples/detection.yaml` over v2 gRPC: the line counts equal the ground
truth exactly, per line, direction and class."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.e2e.serving import REPO, Served
from vss_api.vssstream import VSSStreamSpec
from vss_models.clips import crossing_clip, true_crossings
from vss_streams.analytics import EventKind
from vss_streams.inference import DetectionClient, FrameBatcher
from vss_streams.worker import StreamWorker

LINES = {
    "road": ((0.0, 0.55), (1.0, 0.55)),  # every walk crosses it
    "left-kerb": ((0.0, 0.55), (0.4, 0.55)),  # only the walks on the left third
}


def stream_spec(clip: Path, fps: float) -> VSSStreamSpec:
    return VSSStreamSpec.model_validate({
        "source": {"url": f"file://{clip}"}, "model": {"name": "detector"},
        "sampling": {"fps": fps, "mode": "exhaustive"},
        "analytics": {"lines": [{"name": name, "from": list(a), "to": list(b)}
                                for name, (a, b) in LINES.items()]}})


@pytest.mark.parametrize("fps", [15.0, 5.0], ids=["every-frame", "every-third-frame"])
def test_line_counts_from_the_served_detector_equal_the_ground_truth(
        shipped_detector: Served, clip: Path, fps: float) -> None:
    async def run() -> Counter[tuple[str, str, str]]:
        client = DetectionClient(shipped_detector.grpc_url, "detector", timeout_s=30.0)
        try:
            report = await StreamWorker("crossing", stream_spec(clip, fps), client).run()
        finally:
            await client.close()
        assert report.frames_dropped_model == 0
        assert report.frames_inferred == crossing_clip().frames * fps // 15
        return Counter((e.name, e.direction.value, e.class_name) for e in report.events
                       if e.kind is EventKind.LINE_CROSSED and e.direction is not None)

    counts = asyncio.run(asyncio.wait_for(run(), timeout=240))

    expected = Counter({(name, direction, cls): n for name, (a, b) in LINES.items()
                        for (direction, cls), n in true_crossings(crossing_clip(), a, b).items()})
    assert counts == expected


def test_vss_stream_prints_each_event_as_a_json_line_and_the_counts_at_the_end(
        shipped_detector: Served, clip: Path, tmp_path: Path) -> None:
    example = yaml.safe_load((REPO / "examples" / "stream-crossing.yaml").read_text())
    example["spec"]["source"]["url"] = f"file://{clip}"
    stream_file = tmp_path / "stream.yaml"
    stream_file.write_text(yaml.safe_dump(example))

    done = subprocess.run([sys.executable, "-m", "vss_cli.main", "stream", str(stream_file),
                           "--model-grpc", shipped_detector.grpc_url],
                          capture_output=True, text=True, timeout=240, cwd=REPO, check=False)

    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    crossings = Counter((e["direction"], e["class"]) for e in events if e["kind"] == "lineCrossed")
    road = example["spec"]["analytics"]["lines"][0]
    expected = true_crossings(crossing_clip(), tuple(road["from"]), tuple(road["to"]))
    assert crossings == Counter(expected)
    assert {e["kind"] for e in events} >= {"lineCrossed", "zoneEntered", "zoneExited"}
    assert "road in person: 3" in done.stderr and "100 frames inferred" in done.stderr


def test_three_streams_in_one_worker_share_batches_and_each_counts_exactly(shipped_detector: Served, clip: Path
                                                                            ) -> None:
    """Three streams of one worker process send their frames through one FrameBatcher: the served detector
    gets batches of several frames (fewer calls than frames) and every stream's counts still equal the truth."""
    async def run() -> tuple[list[Counter[tuple[str, str, str]]], FrameBatcher]:
        client = DetectionClient(shipped_detector.grpc_url, "detector", timeout_s=60.0)
        batcher = FrameBatcher(client, max_batch=3, max_delay_s=0.02)
        try:
            reports = await asyncio.gather(*(StreamWorker(f"crossing-{i}", stream_spec(clip, 5.0), batcher).run()
                                             for i in range(3)))
        finally:
            await client.close()
        return [Counter((e.name, e.direction.value, e.class_name) for e in r.events
                        if e.kind is EventKind.LINE_CROSSED and e.direction is not None) for r in reports], batcher

    counts, batcher = asyncio.run(asyncio.wait_for(run(), timeout=300))

    expected = Counter({(name, direction, cls): n for name, (a, b) in LINES.items()
                        for (direction, cls), n in true_crossings(crossing_clip(), a, b).items()})
    assert counts == [expected] * 3
    assert batcher.frames == 3 * crossing_clip().frames // 3
    assert batcher.batches < batcher.frames * 0.75, (batcher.batches, batcher.frames)


def test_one_vss_stream_process_holds_two_streams_and_each_counts_exactly(
        shipped_detector: Served, clip: Path, tmp_path: Path) -> None:
    """`vss stream A B --batch`: one worker process, two VSSStreams (one decoder each, one FrameBatcher to the
    served detector); each stream's events are on stdout with its name and its counts equal the truth."""
    files = []
    for name in ("north", "south"):
        example = yaml.safe_load((REPO / "examples" / "stream-crossing.yaml").read_text())
        example["metadata"]["name"] = name
        example["spec"]["source"]["url"] = f"file://{clip}"
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(example))

    done = subprocess.run([sys.executable, "-m", "vss_cli.main", "stream", *map(str, files), "--batch",
                           "--model-grpc", shipped_detector.grpc_url],
                          capture_output=True, text=True, timeout=300, cwd=REPO, check=False)

    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    road = yaml.safe_load((REPO / "examples" / "stream-crossing.yaml").read_text())["spec"]["analytics"]["lines"][0]
    expected = Counter(true_crossings(crossing_clip(), tuple(road["from"]), tuple(road["to"])))
    for name in ("north", "south"):
        assert Counter((e["direction"], e["class"]) for e in events
                       if e["stream"] == name and e["kind"] == "lineCrossed") == expected
        assert f"vss stream: {name}: 100 frames inferred" in done.stderr
