"""Camera-like 1280x720 JPEG frames for the benchmarks, drawn deterministically from a seed.

A lit ground plane with texture, blobs of colour for people and vehicles, and sensor noise: enough
detail that the JPEGs weigh what a real 720p frame does (150-250 kB at quality 85), so the decode
and the bytes on the wire cost what they cost in production."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import simplejpeg

WIDTH, HEIGHT = 1280, 720


def camera_frame(seed: int, width: int = WIDTH, height: int = HEIGHT) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    base = rng.uniform(60, 160, 3).astype(np.float32)
    light = 0.6 + 0.5 * yy + 0.2 * np.sin(3 * xx + rng.uniform(0, 6))
    frame = base[None, None, :] * light[..., None]
    texture = cv2.resize(rng.normal(0, 25, (height // 8, width // 8, 3)).astype(np.float32), (width, height),
                         interpolation=cv2.INTER_CUBIC)
    frame = frame + texture
    for _ in range(int(rng.integers(8, 20))):  # people (tall) and vehicles (wide), bigger near the camera
        y = int(rng.uniform(0.3, 0.95) * height)
        scale = 0.3 + y / height
        tall = rng.random() < 0.6
        h = int((rng.uniform(60, 140) if tall else rng.uniform(50, 110)) * scale)
        w = int(h * (rng.uniform(0.3, 0.5) if tall else rng.uniform(1.6, 2.4)))
        x = int(rng.uniform(0, width - w))
        colour = rng.uniform(0, 255, 3)
        cv2.rectangle(frame, (x, y - h), (x + w, y), colour.tolist(), -1)
        cv2.rectangle(frame, (x, y - h), (x + w, y), (colour * 0.5).tolist(), 2)
    frame = frame + rng.normal(0, 4, frame.shape).astype(np.float32)  # sensor noise
    out: npt.NDArray[np.uint8] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def jpeg_frames(count: int, quality: int = 85, seed: int = 7) -> list[bytes]:
    return [simplejpeg.encode_jpeg(camera_frame(seed + i), quality=quality, colorspace="RGB")
            for i in range(count)]


def write_frames(folder: Path, count: int = 8) -> list[Path]:
    """The frames as `frame_<i>.jpg` in `folder` (reused when already there), for the load generators."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"frame_{i}.jpg" for i in range(count)]
    if not all(p.is_file() for p in paths):
        for path, data in zip(paths, jpeg_frames(count), strict=True):
            path.write_bytes(data)
    return paths


def read_frames(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("frame_*.jpg"))]
