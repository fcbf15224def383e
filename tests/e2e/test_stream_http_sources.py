"""The stream decoder on the HTTP sources a VSSStream accepts besides RTSP and files: an HLS playlist (segments
written by FFmpeg's own HLS muxer through PyAV) and an MJPEG stream (multipart/x-mixed-replace, as IP cameras
serve it), each from a real aiohttp server on loopback, decoded by the worker's Decoder (FFmpeg's HLS and
mpjpeg demuxers): every frame arrives, in order, at the source's resolution."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from aiohttp import web
from numpy.typing import NDArray

from vss_api.vssstream import Sampling, SamplingMode, Source
from vss_models.clips import crossing_clip, render_frames
from vss_streams.source import Decoder, Frame, FrameSlot, SourceState

FRAMES = 45
WIDTH, HEIGHT = 320, 180


@pytest.fixture(scope="module")
def pictures() -> list[NDArray[np.uint8]]:
    frames, _ = render_frames(crossing_clip(frames=FRAMES, width=WIDTH, height=HEIGHT))
    return frames


def write_hls(pictures: list[NDArray[np.uint8]], directory: Path) -> Path:
    playlist = directory / "clip.m3u8"
    with av.open(str(playlist), "w", format="hls",
                 options={"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}) as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for picture in pictures:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode())
    return playlist


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def first_frames(url: str, count: int) -> tuple[list[Frame], SourceState]:
    """`count` frames of URL through the worker's decoder (exhaustive: none dropped), then stop."""
    state = SourceState()
    slot = FrameSlot(SamplingMode.EXHAUSTIVE, asyncio.get_running_loop(), state)
    decoder = Decoder(Source(url=url), Sampling(fps=15, mode=SamplingMode.EXHAUSTIVE), slot, state)
    decoder.start()
    frames: list[Frame] = []
    try:
        async with asyncio.timeout(60):
            while len(frames) < count and (frame := await slot.get()) is not None:
                frames.append(frame)
    finally:
        decoder.stop()
    return frames, state


def run_with(app: Callable[[], web.Application], path: str) -> tuple[list[Frame], SourceState]:
    async def run() -> tuple[list[Frame], SourceState]:
        runner, base = await serve(app())
        try:
            return await first_frames(base + path, FRAMES)
        finally:
            await runner.cleanup()
    return asyncio.run(run())


def test_an_hls_playlist_over_http_is_decoded_frame_by_frame(pictures: list[NDArray[np.uint8]], tmp_path: Path
                                                              ) -> None:
    write_hls(pictures, tmp_path)

    def app() -> web.Application:
        application = web.Application()
        application.router.add_static("/hls", tmp_path)
        return application

    frames, state = run_with(app, "/hls/clip.m3u8")

    assert len(frames) == FRAMES and state.resolution == (WIDTH, HEIGHT)
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    assert np.abs(frames[10].pixels.astype(int) - pictures[10]).mean() < 8  # the same picture, through H.264


def test_an_mjpeg_camera_over_http_is_decoded_frame_by_frame(pictures: list[NDArray[np.uint8]]) -> None:
    async def mjpeg(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"})
        await answer.prepare(request)
        for picture in pictures:
            _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            await answer.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                               + jpeg.tobytes() + b"\r\n")
        return answer

    def app() -> web.Application:
        application = web.Application()
        application.router.add_get("/video.mjpg", mjpeg)
        return application

    frames, state = run_with(app, "/video.mjpg")

    assert len(frames) == FRAMES and state.resolution == (WIDTH, HEIGHT)
    assert np.abs(frames[-1].pixels.astype(int) - pictures[-1]).mean() < 8

