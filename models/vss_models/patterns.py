"""Generated 224x224 images of one of twelve surface patterns, for the classifier.

Each image is a pattern of its class (stripes, bricks, honeycomb, ...) at a random scale, orientation, phase,
pair of colours and line weight, under a perspective tilt, with clutter, lighting, blur, noise and JPEG
artefacts. Telling bricks from a grid, a honeycomb from dots, or zigzags from waves at every scale and angle
takes real learning; colour never helps, since both colours of every pattern are random.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from vss_models.scenes import camera_artefacts, lighting, noise_texture, polygon_points, random_colour

PATTERN_CLASSES: Final = (
    "stripes",
    "waves",
    "zigzag",
    "checkerboard",
    "grid",
    "bricks",
    "dots",
    "honeycomb",
    "rings",
    "rays",
    "speckle",
    "clouds",
)
IMAGE_SIZE: Final = 224

Coordinates = NDArray[np.float32]
Mask = NDArray[np.bool_]


@dataclass(frozen=True)
class PatternImage:
    image: NDArray[np.uint8]  # IMAGE_SIZE x IMAGE_SIZE x 3 RGB
    class_id: int


def frame(rng: np.random.Generator) -> tuple[Coordinates, Coordinates]:
    """Pattern coordinates (u, v) of every pixel: the image plane rotated, shifted and tilted in depth."""
    size = IMAGE_SIZE
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    tilt = corners + rng.uniform(-0.08, 0.08, (4, 2)).astype(np.float32) * size
    warp = cv2.getPerspectiveTransform(corners, tilt)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    points = np.stack([xs, ys, np.ones_like(xs)], -1) @ warp.T.astype(np.float32)
    x, y = points[..., 0] / points[..., 2], points[..., 1] / points[..., 2]
    angle = rng.uniform(0, np.pi)
    u = x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle)) + np.float32(rng.uniform(0, 100))
    v = -x * np.float32(np.sin(angle)) + y * np.float32(np.cos(angle)) + np.float32(rng.uniform(0, 100))
    return u.astype(np.float32), v.astype(np.float32)


def band(values: Coordinates, period: float, duty: float) -> Mask:
    """Where `values` fall in the first `duty` share of each `period`."""
    return np.asarray((values % period) < duty * period)


def stripes(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    return band(u, rng.uniform(12, 40), rng.uniform(0.3, 0.7))


def waves(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    period = rng.uniform(14, 36)
    wavelength = rng.uniform(1.5, 3.0) * period
    return band(u + period * rng.uniform(0.5, 0.9) * np.sin(2 * np.pi * v / wavelength), period, rng.uniform(0.35, 0.6))


def zigzag(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    period = rng.uniform(14, 36)
    wavelength = rng.uniform(1.0, 2.0) * period
    triangle = 2 * np.abs((v / wavelength) % 1.0 - 0.5)  # 0..1 saw-tooth folded into a triangle wave
    return band(u + period * rng.uniform(0.7, 1.2) * triangle, period, rng.uniform(0.35, 0.6))


def checkerboard(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    period = rng.uniform(12, 45)
    return np.asarray((np.floor(u / period) + np.floor(v / period)) % 2 == 0)


def grid(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    period = rng.uniform(16, 45)
    duty = rng.uniform(0.12, 0.25)
    return band(u, period, duty) | band(v, period * rng.uniform(0.8, 1.25), duty)


def bricks(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    height = rng.uniform(12, 28)
    length = height * rng.uniform(1.8, 3.2)
    mortar = rng.uniform(0.1, 0.22)
    row = np.floor(v / height)
    shifted = u + (row % 2) * length / 2
    return band(v, height, mortar) | band(shifted, length, mortar * height / length)


def dots(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    period = rng.uniform(14, 40)
    du = (u % period) - period / 2
    dv = (v % period) - period / 2
    return np.asarray(du**2 + dv**2 < (period * rng.uniform(0.2, 0.38)) ** 2)


def honeycomb(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    """The walls of a hexagonal lattice: points nearly equidistant from their two nearest cell centres."""
    side = rng.uniform(9, 22)
    pitch_x, pitch_y = side * np.sqrt(3), side * 1.5
    row = np.floor(v / pitch_y)
    best = np.full(u.shape, np.inf, np.float32)
    second = np.full(u.shape, np.inf, np.float32)
    for dr in (-1, 0, 1, 2):
        r = row + dr
        cy = r * pitch_y
        offset = (r % 2) * pitch_x / 2
        col = np.floor((u - offset) / pitch_x)
        for dc in (-1, 0, 1):
            cx = (col + dc) * pitch_x + offset
            distance = np.sqrt((u - cx) ** 2 + (v - cy) ** 2)
            second = np.minimum(second, np.maximum(best, distance))
            best = np.minimum(best, distance)
    return np.asarray(second - best < side * rng.uniform(0.12, 0.3))


def rings(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    centre = rng.uniform(-60, IMAGE_SIZE + 60, 2) + np.array([u.min(), v.min()])
    radius = np.sqrt((u - centre[0]) ** 2 + (v - centre[1]) ** 2)
    return band(radius, rng.uniform(12, 36), rng.uniform(0.3, 0.7))


def rays(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    centre = rng.uniform(0, IMAGE_SIZE, 2) + np.array([u.min(), v.min()])
    angle = np.arctan2(v - centre[1], u - centre[0])
    return band(angle + np.pi, 2 * np.pi / int(rng.integers(8, 24)), rng.uniform(0.35, 0.65))


def speckle(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    mask = np.zeros(u.shape, np.uint8)
    radius = rng.uniform(2, 6)
    for x, y in rng.uniform(0, IMAGE_SIZE, (int(rng.integers(80, 400)), 2)):
        cv2.circle(mask, (int(x), int(y)), max(1, int(radius * rng.uniform(0.6, 1.4))), 1, -1)
    return mask > 0


def clouds(rng: np.random.Generator, u: Coordinates, v: Coordinates) -> Mask:
    return noise_texture(rng, IMAGE_SIZE, IMAGE_SIZE, octaves=3) > rng.uniform(-0.3, 0.3)


PAINTERS: Final[dict[str, Callable[[np.random.Generator, Coordinates, Coordinates], Mask]]] = {
    "stripes": stripes,
    "waves": waves,
    "zigzag": zigzag,
    "checkerboard": checkerboard,
    "grid": grid,
    "bricks": bricks,
    "dots": dots,
    "honeycomb": honeycomb,
    "rings": rings,
    "rays": rays,
    "speckle": speckle,
    "clouds": clouds,
}


def luminance(colour: NDArray[np.float32]) -> float:
    return float(colour @ np.array([0.299, 0.587, 0.114], np.float32))


def colour_pair(rng: np.random.Generator, contrast: float) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Two random colours at least `contrast` luminance levels apart."""
    first = random_colour(rng)
    for _ in range(30):
        second = random_colour(rng)
        if abs(luminance(first) - luminance(second)) >= contrast:
            return first, second
    return first, np.full(3, 255.0 if luminance(first) < 128 else 0.0, np.float32)


def generate_pattern_image(seed: int, index: int) -> PatternImage:
    """Image `index` of the stream named by `seed`; classes cycle so every stream is balanced."""
    rng = np.random.default_rng([seed, index, 13])
    class_id = index % len(PATTERN_CLASSES)
    u, v = frame(rng)
    mask = PAINTERS[PATTERN_CLASSES[class_id]](rng, u, v).astype(np.float32)
    mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), 0.7), np.float32)[..., None]  # antialiased edges
    ink, paper = colour_pair(rng, float(rng.uniform(50, 130)))
    canvas = (paper * (1 - mask) + ink * mask).astype(np.float32)
    canvas += (rng.uniform(3, 15) * noise_texture(rng, IMAGE_SIZE, IMAGE_SIZE))[..., None]
    for _ in range(int(rng.integers(0, 3))):  # clutter over the surface: blobs and strokes
        clutter = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        if rng.random() < 0.5:
            x, y = rng.uniform(0, IMAGE_SIZE, 2)
            points = polygon_points(rng, x, y, IMAGE_SIZE * rng.uniform(0.04, 0.12), 7, jitter=0.5)
            cv2.fillPoly(clutter, [points], 1.0, cv2.LINE_AA)
        else:
            ends = rng.uniform(0, IMAGE_SIZE, 4).astype(int)
            cv2.line(clutter, (ends[0], ends[1]), (ends[2], ends[3]), 1.0, int(rng.integers(1, 5)), cv2.LINE_AA)
        canvas = (canvas * (1 - clutter[..., None]) + random_colour(rng) * clutter[..., None]).astype(np.float32)
    return PatternImage(image=camera_artefacts(rng, lighting(rng, canvas)), class_id=class_id)
