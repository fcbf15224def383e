"""Inputs to try the shipped models with (`vss predict`), drawn by the same generators they were trained on: a
street scene frame, and a sensor log with one anomaly in it. `python -m vss_models.samples DIR` writes
`scene.jpg` and `sensors.csv` into DIR; the README's figures are `vss predict` on these."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from vss_models.scenes import generate_scene
from vss_models.timeseries.sensors import ANOMALY_SCALE, FEATURES, Site, impute, observe, synthesize

VIBRATION = FEATURES.index("vibration")


def scene_frame(seed: int = 2024, index: int = 1, size: tuple[int, int] = (1280, 720)) -> NDArray[np.uint8]:
    """A generated RGB street scene of `size` (width, height): people, vehicles and objects on a road."""
    return generate_scene(seed, index, size).image


def sensor_log(length: int = 400, anomaly: tuple[int, int] = (250, 290), seed: int = 11) -> NDArray[np.float32]:
    """`length` hourly readings [length, 5] of one machine room, vibration raised by 6 of its anomaly scales over
    readings `anomaly` [start, end)."""
    rng = np.random.default_rng(seed)
    values = synthesize(Site.draw(rng), length, rng).values
    start, end = anomaly
    values[start:end, VIBRATION] += 6.0 * float(ANOMALY_SCALE[VIBRATION])
    return impute(observe(values, rng))


def write_csv(values: NDArray[np.float32], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FEATURES)
        writer.writerows([[f"{v:.6g}" for v in row] for row in values.tolist()])
    return path


def main(argv: list[str] | None = None) -> int:
    out = Path((argv if argv is not None else sys.argv[1:] or ["."])[0])
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "scene.jpg"), scene_frame()[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    write_csv(sensor_log(), out / "sensors.csv")
    print(out / "scene.jpg", out / "sensors.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
