"""`vss stream --watch`: lines and zones edited in the stream's file (a mounted ConfigMap in the cluster) apply
to the running worker; a broken edit is not applied and the worker keeps counting with what it had."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import yaml

from vss_api.vssstream import VSSStream
from vss_cli.stream import watch_file
from vss_streams.inference import DetectionClient
from vss_streams.worker import StreamWorker

DOC = {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSStream", "metadata": {"name": "gate"},
       "spec": {"source": {"url": "file:///clips/none.mp4"}, "model": {"name": "detector"},
                "analytics": {"lines": [{"name": "road", "from": [0, 0.5], "to": [1, 0.5]}]}}}


async def _until(condition: object, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "not applied before the deadline"
        await asyncio.sleep(0.02)


def test_edited_zones_apply_to_the_running_worker_and_a_broken_edit_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(DOC))

    async def run() -> None:
        # The client is never called: the watcher only reconfigures the worker's analytics.
        client = DetectionClient("127.0.0.1:9", "detector")
        worker = StreamWorker("gate", VSSStream.from_yaml_file(path).spec, client)
        watcher = asyncio.create_task(watch_file(path, worker, 0.02))
        try:
            edited = yaml.safe_load(path.read_text())
            edited["spec"]["analytics"]["zones"] = [{"name": "kerb", "polygon": [[0, 0], [1, 0], [1, 1]]}]
            path.write_text(yaml.safe_dump(edited))
            await _until(lambda: [z.name for z in worker.analyzer.analytics.zones] == ["kerb"])

            path.write_text("spec: [this is not a stream")
            await asyncio.sleep(0.2)  # several watch periods: nothing to apply, nothing may break
            assert [z.name for z in worker.analyzer.analytics.zones] == ["kerb"]
            assert not watcher.done()
        finally:
            watcher.cancel()
            await client.close()

    asyncio.run(run())
