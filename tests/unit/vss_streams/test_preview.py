"""The annotated preview: boxes with their track id and class, lines with their counts and zones with their
occupancy drawn on the frame at the preview's width; JPEGs made only while someone watches, at most
`preview.fps` a second, always of the newest frame."""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np

from vss_api.vssstream import Analytics, Direction
from vss_api.vssstream import Preview as PreviewSpec
from vss_streams.analytics import Analyzer, TrackedObject
from vss_streams.preview import Preview, encode_jpeg, live_counts, render
from vss_streams.source import Frame

W, H = 1280, 720
ANALYTICS = Analytics.model_validate({
    "lines": [{"name": "road", "from": [0.0, 0.5], "to": [1.0, 0.5]}],
    "zones": [{"name": "kerb", "polygon": [[0.0, 0.8], [0.3, 0.8], [0.3, 1.0], [0.0, 1.0]]}]})
VEHICLE = TrackedObject(7, "vehicle", (640.0, 100.0, 960.0, 300.0))


def _analyzer() -> Analyzer:
    return Analyzer("cam", ANALYTICS, min_track_age=1, forget_after_frames=10)


def _frame(index: int) -> Frame:
    return Frame(index, index / 10.0, np.zeros((H, W, 3), np.uint8), time.monotonic())


def test_counts_list_every_line_and_zone_with_what_was_counted_per_direction_and_class() -> None:
    analyzer = _analyzer()
    analyzer.line_counts[("road", Direction.IN, "person")] = 2
    analyzer.line_counts[("road", Direction.OUT, "vehicle")] = 1

    assert live_counts(analyzer) == {"lines": {"road": {"in": {"person": 2}, "out": {"vehicle": 1}}},
                                     "zones": {"kerb": {}}}


def test_the_frame_is_drawn_at_the_preview_width_with_the_boxes_the_line_and_the_zone() -> None:
    counts = {"lines": {"road": {"in": {"person": 3}, "out": {}}}, "zones": {"kerb": {"person": 1}}}

    image = render(np.zeros((H, W, 3), np.uint8), [VEHICLE], ANALYTICS, counts, 640)

    assert image.shape == (360, 640, 3)
    # the vehicle's box (scaled by 1/2: 320..480 x 50..150) is drawn in its colour (BGR orange), not inside it
    assert tuple(image[100, 320]) == (240, 160, 40) and tuple(image[100, 400]) == (0, 0, 0)
    assert image[180, 20:620].any(axis=1).all()  # the line across the frame at y = 0.5
    kerb = image[300:360, 0:190]
    assert (kerb[..., 0] > 30).mean() > 0.9  # the zone is tinted
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(image), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (360, 640, 3)


def test_nothing_is_encoded_while_nobody_watches_and_watchers_get_at_most_fps_images_of_the_newest_frame() -> None:
    async def run() -> tuple[int, list[int], float, int]:
        preview = Preview(PreviewSpec(fps=5, width=320), _analyzer())
        for i in range(50):
            preview.on_frame(_frame(i), [VEHICLE], [])
            await asyncio.sleep(0.002)
        unwatched = preview.encoded
        shown: list[int] = []

        async def feed() -> None:
            for i in range(50, 150):
                preview.on_frame(_frame(i), [VEHICLE], [])
                await asyncio.sleep(0.01)

        feeding: asyncio.Task[None] | None = None
        started = time.monotonic()
        async for jpeg in preview.watch():
            shown.append(jpeg.frame)
            feeding = feeding or asyncio.create_task(feed())
            decoded = cv2.imdecode(np.frombuffer(jpeg.data, np.uint8), cv2.IMREAD_COLOR)
            assert decoded is not None and decoded.shape == (180, 320, 3)
            if feeding.done():
                break
        elapsed = time.monotonic() - started
        watched = preview.encoded
        await asyncio.sleep(0.5)  # no watcher any more: nothing more is encoded
        await preview.close()
        return unwatched, shown, elapsed, preview.encoded - watched

    unwatched, shown, elapsed, after = asyncio.run(asyncio.wait_for(run(), 30))

    assert unwatched == 0
    assert shown[0] == 49  # the newest frame when the watcher came
    assert shown == sorted(shown) and len(set(shown)) == len(shown)
    # 100 frames in about 1.2 s (more on a loaded machine), at most 5 images a second of them
    assert 3 <= len(shown) <= 5 * elapsed + 1
    assert after == 0
