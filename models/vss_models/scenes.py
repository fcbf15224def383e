"""Synthetic surveillance-like scenes with boxed `person`, `vehicle` and `object` instances.

Everything the detector learns from and is measured on is drawn here, deterministically from a seed:
a camera looking down a ground plane (objects grow towards the bottom of the frame), textured ground and
backdrop, unlabelled clutter, lighting gradients, occlusion, blur, sensor noise and JPEG artefacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

DETECTION_CLASSES: Final = ("person", "vehicle", "object")
PERSON, VEHICLE, OBJECT = 0, 1, 2

# Frame sizes (width, height) of the cameras we imitate: mostly 16:9, some 4:3.
FRAME_SIZES: Final = ((1280, 720), (640, 480), (960, 540), (1920, 1080), (640, 360), (800, 600))

MAX_OBJECTS: Final = 20
# An instance must keep this share of its pixels visible (not hidden by nearer ones, not off-frame).
MIN_VISIBLE: Final = 0.5
# Smallest instance heights as a share of the frame height, per class.
MIN_HEIGHT: Final = {PERSON: 0.06, VEHICLE: 0.05, OBJECT: 0.035}

Image = NDArray[np.uint8]
Colour = NDArray[np.float32]
Point = tuple[int, int]
Mask = NDArray[np.bool_]


@dataclass(frozen=True)
class Scene:
    """An RGB frame with the tight boxes (x1, y1, x2, y2 in pixels) of the visible part of each instance."""

    image: Image
    boxes: NDArray[np.float32]
    class_ids: NDArray[np.int64]


@dataclass(frozen=True)
class Sprite:
    """One drawn thing: colours and coverage on a local canvas whose origin sits at (x, y) in the frame."""

    x: int
    y: int
    rgb: NDArray[np.float32]
    alpha: NDArray[np.float32]


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def generate_scene(seed: int, index: int = 0, size: tuple[int, int] | None = None) -> Scene:
    """Scene number `index` of the stream named by `seed`; `size` (width, height) overrides the drawn one."""
    rng = scene_rng(seed, index)
    width, height = size if size is not None else FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    horizon = int(height * rng.uniform(0.12, 0.45))
    canvas = backdrop(rng, width, height, horizon)
    for sprite in clutter(rng, width, height, horizon):
        composite(canvas, sprite)

    sprites, boxes, class_ids = place_instances(rng, width, height, horizon)
    for sprite in sprites:
        composite(canvas, sprite)

    image = camera_artefacts(rng, lighting(rng, canvas))
    return Scene(
        image=image,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        class_ids=np.asarray(class_ids, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------- backdrop


def noise_texture(rng: np.random.Generator, width: int, height: int, octaves: int = 4) -> NDArray[np.float32]:
    """Zero-mean value noise summed over a few scales, about unit amplitude."""
    texture = np.zeros((height, width), np.float32)
    amplitude = 1.0
    cells = int(rng.integers(2, 6))
    for _ in range(octaves):
        coarse = rng.standard_normal((cells, max(2, cells * width // max(height, 1)))).astype(np.float32)
        texture += amplitude * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        amplitude *= 0.55
        cells *= 3
    return texture / 1.6


def random_colour(rng: np.random.Generator, low: float = 0.0, high: float = 255.0) -> NDArray[np.float32]:
    return rng.uniform(low, high, 3).astype(np.float32)


def textured_fill(
    rng: np.random.Generator,
    width: int,
    height: int,
    base: NDArray[np.float32],
    strength: float,
    patterns: bool = True,
) -> NDArray[np.float32]:
    """A `height`x`width` RGB surface of colour `base` with noise, and (`patterns`) sometimes tiles or stripes."""
    surface = np.empty((height, width, 3), np.float32)
    surface[:] = base
    surface += (strength * noise_texture(rng, width, height))[..., None] * rng.uniform(0.6, 1.0, 3)
    pattern = rng.random() if patterns else 1.0
    if pattern < 0.25:  # paving tiles
        step = int(rng.integers(12, 60))
        line = float(rng.uniform(-40, 40))
        surface[::step, :] += line
        surface[:, ::step] += line
    elif pattern < 0.4:  # stripes at some angle
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 40)
        xs = np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(angle) * 2 * np.pi / period)
        ys = np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(angle) * 2 * np.pi / period)
        phase = xs + ys
        surface += (rng.uniform(5, 25) * np.sin(phase))[..., None]
    return surface


def backdrop(rng: np.random.Generator, width: int, height: int, horizon: int) -> NDArray[np.float32]:
    """Ground below the horizon (asphalt, grass, paving) and sky or a building facade above it."""
    ground_colour = rng.choice(
        np.array(
            [[90, 90, 95], [70, 75, 70], [120, 115, 105], [60, 95, 55], [150, 140, 120], [40, 40, 45]],
            np.float32,
        )
    ) + rng.uniform(-20, 20, 3).astype(np.float32)
    canvas = textured_fill(rng, width, height, ground_colour, float(rng.uniform(5, 30)))
    if rng.random() < 0.6:  # a facade with windows
        facade = textured_fill(rng, width, horizon, random_colour(rng, 60, 200), float(rng.uniform(3, 15)))
        window_colour = random_colour(rng, 20, 230)
        step_x, step_y = int(rng.integers(20, 70)), int(rng.integers(20, 60))
        for y in range(int(rng.integers(2, 12)), horizon - 8, step_y):
            for x in range(int(rng.integers(2, 20)), width - 8, step_x):
                cv2.rectangle(facade, (x, y), (x + step_x // 2, y + step_y // 2), window_colour.tolist(), -1)
        canvas[:horizon] = facade
    else:  # sky
        top, bottom = random_colour(rng, 120, 255), random_colour(rng, 150, 255)
        ramp = np.linspace(0, 1, max(horizon, 1), dtype=np.float32)[:, None, None]
        canvas[:horizon] = top * (1 - ramp) + bottom * ramp
    if rng.random() < 0.5:  # lane markings
        colour = rng.choice(np.array([[230, 230, 230], [230, 200, 60]], np.float32))
        y = int(rng.uniform(horizon + 0.2 * (height - horizon), height))
        thickness = max(2, int(0.01 * height))
        for x in range(int(rng.integers(0, 60)), width, int(rng.integers(60, 160))):
            cv2.line(canvas, (x, y), (x + int(rng.integers(25, 60)), y), colour.tolist(), thickness)
    return canvas


def clutter(rng: np.random.Generator, width: int, height: int, horizon: int) -> list[Sprite]:
    """Unlabelled things a detector must learn to ignore: poles, signs, trees, bins, puddles, blobs."""
    sprites = []
    for _ in range(int(rng.integers(0, 8))):
        kind = int(rng.integers(5))
        bottom = int(rng.uniform(horizon, height))
        depth = (bottom - horizon + 1) / (height - horizon + 1)
        size = max(8, int(height * rng.uniform(0.1, 0.6) * (0.3 + depth)))
        x = int(rng.uniform(-0.1, 1.0) * width)
        colour = random_colour(rng, 20, 230)
        if kind == 0:  # pole, sometimes with a round or square sign on top
            w = max(2, size // 25)
            canvas = np.zeros((size, max(w, size // 4) + 1), np.float32)
            cx = canvas.shape[1] // 2
            cv2.rectangle(canvas, (cx - w // 2, 0), (cx + w // 2, size), 1.0, -1)
            radius = canvas.shape[1] // 2
            if rng.random() < 0.5:
                cv2.circle(canvas, (cx, radius), radius, 1.0, -1, cv2.LINE_AA)
            sprites.append(solid_sprite(rng, x, bottom - size, canvas, colour))
        elif kind == 1:  # tree: trunk and crown
            canvas = np.zeros((size, size), np.float32)
            cv2.rectangle(canvas, (size // 2 - size // 20, size // 2), (size // 2 + size // 20, size), 1.0, -1)
            for _ in range(4):
                centre = (int(size * rng.uniform(0.3, 0.7)), int(size * rng.uniform(0.2, 0.45)))
                cv2.circle(canvas, centre, int(size * rng.uniform(0.15, 0.3)), 1.0, -1, cv2.LINE_AA)
            green = np.array([rng.uniform(20, 80), rng.uniform(70, 160), rng.uniform(20, 70)], np.float32)
            sprites.append(solid_sprite(rng, x, bottom - size, canvas, green))
        elif kind == 2:  # puddle or shadow
            canvas = np.zeros((size // 4 + 2, size), np.float32)
            cv2.ellipse(canvas, (size // 2, size // 8 + 1), (size // 2, size // 8), 0, 0, 360, 0.5, -1)
            sprites.append(solid_sprite(rng, x, bottom - size // 8, canvas, colour * 0.3))
        elif kind == 3:  # wall, bench or fence segment: wide, low, no wheels
            w, h = size, max(4, int(size * rng.uniform(0.15, 0.4)))
            canvas = np.zeros((h, w), np.float32)
            cv2.rectangle(canvas, (0, 0), (w - 1, h - 1), 1.0, -1)
            sprites.append(solid_sprite(rng, x, bottom - h, canvas, colour))
        else:  # irregular blob
            canvas = np.zeros((size, size), np.float32)
            points = polygon_points(rng, size / 2, size / 2, size / 2.2, int(rng.integers(5, 10)), jitter=0.45)
            cv2.fillPoly(canvas, [points], 1.0, cv2.LINE_AA)
            sprites.append(solid_sprite(rng, x, bottom - size, canvas, colour))
    return sprites


def polygon_points(
    rng: np.random.Generator, cx: float, cy: float, radius: float, corners: int, jitter: float
) -> NDArray[np.int32]:
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = radius * (1 - jitter * rng.random(corners))
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)


def solid_sprite(
    rng: np.random.Generator, x: int, y: int, coverage: NDArray[np.float32], colour: NDArray[np.float32]
) -> Sprite:
    """A sprite of one colour with a little shading noise."""
    h, w = coverage.shape
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = colour
    rgb += (8 * noise_texture(rng, w, h, octaves=2))[..., None]
    return Sprite(x=x, y=y, rgb=rgb, alpha=coverage)


# ---------------------------------------------------------------------------------------------- instances


class SpriteCanvas:
    """A local canvas an instance is painted on part by part: colours in `rgb`, coverage in `alpha`."""

    def __init__(self, width: int, height: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.alpha = np.zeros((height, width), np.float32)

    def line(self, start: Point, end: Point, colour: Colour, width: int) -> None:
        for layer, ink in self.layers(colour):
            cv2.line(layer, start, end, ink, max(1, width), cv2.LINE_AA)

    def rectangle(self, corner: Point, opposite: Point, colour: Colour, width: int = -1) -> None:
        for layer, ink in self.layers(colour):
            cv2.rectangle(layer, corner, opposite, ink, width)

    def circle(self, centre: Point, radius: int, colour: Colour) -> None:
        for layer, ink in self.layers(colour):
            cv2.circle(layer, centre, max(1, radius), ink, -1, cv2.LINE_AA)

    def ellipse(
        self, centre: Point, axes: Point, colour: Colour, start: int = 0, end: int = 360, width: int = -1
    ) -> None:
        for layer, ink in self.layers(colour):
            cv2.ellipse(layer, centre, axes, 0, start, end, ink, width, cv2.LINE_AA)

    def polygon(self, corners: list[tuple[float, float]], colour: Colour) -> None:
        points = np.array(corners, np.int32)
        for layer, ink in self.layers(colour):
            cv2.fillPoly(layer, [points], ink, cv2.LINE_AA)

    def layers(self, colour: Colour) -> list[tuple[NDArray[np.float32], tuple[float, ...]]]:
        return [(self.rgb, tuple(float(c) for c in colour)), (self.alpha, (1.0,))]

    def sprite(self) -> Sprite:
        return Sprite(x=0, y=0, rgb=self.rgb, alpha=self.alpha)


def draw_person(rng: np.random.Generator, height: int) -> Sprite:
    """An upright figure (head, torso, arms, legs) about 2.5-4 times taller than wide."""
    h = height
    w = max(4, int(h * rng.uniform(0.28, 0.42)))
    skin = rng.choice(np.array([[240, 200, 170], [200, 150, 110], [140, 95, 60], [90, 60, 40]], np.float32))
    top, bottom, hair = random_colour(rng), random_colour(rng, 0, 160), random_colour(rng, 0, 120)
    canvas = SpriteCanvas(w, h)
    cx = w / 2
    head_r = max(1.5, h * rng.uniform(0.065, 0.085))
    head_cy = head_r + 0.5
    leg_w = max(1, int(w * rng.uniform(0.18, 0.26)))
    hip_y = int(h * rng.uniform(0.52, 0.58))
    stride = rng.uniform(0.0, 0.25) * w
    for side in (-1, 1):
        foot_x = int(cx + side * (w * 0.18 + stride * rng.random()))
        canvas.line((int(cx + side * w * 0.14), hip_y), (foot_x, h - 1 - leg_w // 2), bottom, leg_w)
    torso_top = int(head_cy + head_r * 0.9)
    shoulder = int(w * rng.uniform(0.32, 0.45))
    torso_centre = (int(cx), (torso_top + hip_y) // 2 + 1)
    canvas.ellipse(torso_centre, (shoulder, max(2, (hip_y - torso_top) // 2 + 1)), top)
    arm_w = max(1, int(w * rng.uniform(0.12, 0.18)))
    for side in (-1, 1):
        hand = (int(cx + side * (w / 2 - arm_w)), int(hip_y + h * rng.uniform(-0.08, 0.05)))
        canvas.line((int(cx + side * shoulder * 0.8), torso_top + arm_w), hand, top * 0.85, arm_w)
    canvas.circle((int(cx), int(head_cy)), int(head_r), skin)
    if rng.random() < 0.7:  # hair or a hat
        hair_axes = (int(head_r), max(1, int(head_r * 0.7)))
        canvas.ellipse((int(cx), int(head_cy - head_r * 0.3)), hair_axes, hair, start=180)
    return canvas.sprite()


def draw_vehicle(rng: np.random.Generator, height: int) -> Sprite:
    """A car, van or truck seen from the side: a body, a glazed cabin and two or three dark wheels."""
    h = height
    w = max(8, int(h * rng.uniform(1.5, 2.8)))
    body_colour, glass = random_colour(rng), random_colour(rng, 20, 90) + np.float32(rng.uniform(0, 60))
    canvas = SpriteCanvas(w, h)
    wheel_r = max(2, int(h * rng.uniform(0.16, 0.22)))
    body_bottom = h - wheel_r
    truck = rng.random() < 0.3
    body_top = int(h * (0.05 if truck else rng.uniform(0.35, 0.5)))
    canvas.rectangle((0, body_top), (w - 1, body_bottom), body_colour)
    if not truck:  # the cabin on top of the body
        left, right = w * rng.uniform(0.15, 0.3), w * rng.uniform(0.65, 0.85)
        roof = h * rng.uniform(0.0, 0.06)
        canvas.polygon(
            [
                (left - w * 0.08, body_top + 1),
                (left + w * 0.06, roof),
                (right - w * 0.04, roof),
                (right + w * 0.08, body_top + 1),
            ],
            body_colour * 0.92,
        )
        inset = max(1, h // 14)
        canvas.polygon(
            [
                (left - w * 0.04 + inset, body_top),
                (left + w * 0.06 + inset, roof + inset),
                (right - w * 0.04 - inset, roof + inset),
                (right + w * 0.05 - inset, body_top),
            ],
            glass,
        )
    else:  # a cab window at the front of a box truck
        x0 = int(w * (0.82 if rng.random() < 0.5 else 0.03))
        canvas.rectangle((x0, int(h * 0.12)), (x0 + int(w * 0.14), int(h * 0.4)), glass)
    stripe = int(body_top + (body_bottom - body_top) * rng.uniform(0.3, 0.7))
    canvas.line((0, stripe), (w - 1, stripe), body_colour * rng.uniform(0.5, 1.3), h // 20)
    tyre = np.array([25, 25, 28], np.float32) + np.float32(rng.uniform(0, 20))
    hub = np.array([150, 150, 155], np.float32)
    for fraction in [0.2, 0.8] if rng.random() < 0.8 else [0.15, 0.5, 0.85]:
        centre = (int(w * fraction), h - 1 - wheel_r)
        canvas.circle(centre, wheel_r, tyre)
        canvas.circle(centre, wheel_r // 2, hub)
    return canvas.sprite()


def draw_object(rng: np.random.Generator, height: int) -> Sprite:
    """A left item: a taped cardboard box, a suitcase with a handle, or a soft bag."""
    h = height
    kind = int(rng.integers(3))
    w = max(4, int(h * (rng.uniform(0.55, 0.8) if kind == 1 else rng.uniform(0.8, 1.5))))
    cardboard = np.array([170, 130, 80], np.float32) + rng.uniform(-30, 30, 3).astype(np.float32)
    colour = cardboard if kind == 0 else random_colour(rng)
    canvas = SpriteCanvas(w, h)
    if kind == 0:  # box with a tape seam and a darker side face
        canvas.rectangle((0, 0), (w - 1, h - 1), colour)
        side = int(w * rng.uniform(0.6, 0.8))
        canvas.rectangle((side, 0), (w - 1, h - 1), colour * 0.75)
        canvas.line((side // 2, 0), (side // 2, h - 1), colour * 1.25, w // 12)
    elif kind == 1:  # suitcase: handle on top, body with a seam
        handle = max(2, h // 6)
        canvas.rectangle((w // 3, 0), (w - 1 - w // 3, handle), colour * 0.5, max(1, h // 20))
        canvas.rectangle((0, handle), (w - 1, h - 1), colour)
        canvas.line((w // 2, handle), (w // 2, h - 1), colour * 0.7, w // 10)
    else:  # soft bag: an ellipse with a strap
        canvas.ellipse((w // 2, int(h * 0.62)), (w // 2, int(h * 0.38)), colour)
        canvas.ellipse((w // 2, int(h * 0.3)), (w // 3, int(h * 0.28)), colour * 0.6, start=180, width=max(1, h // 12))
    return canvas.sprite()


DRAWERS: Final = {PERSON: draw_person, VEHICLE: draw_vehicle, OBJECT: draw_object}
# Height of a class's instance standing at the bottom edge, as a share of frame height, before zoom.
NEAR_HEIGHT: Final = {PERSON: 0.55, VEHICLE: 0.45, OBJECT: 0.16}


def place_instances(
    rng: np.random.Generator, width: int, height: int, horizon: int
) -> tuple[list[Sprite], list[list[float]], list[int]]:
    """Draw 0-20 instances on the ground plane, nearest first, rejecting any left mostly hidden.

    Returns the sprites in painting order (far to near) with the tight boxes of their visible pixels.
    """
    count = 0 if rng.random() < 0.05 else int(rng.integers(1, MAX_OBJECTS + 1))
    zoom = rng.uniform(0.6, 1.4)
    candidates = []
    for _ in range(count):
        class_id = int(rng.choice(3, p=[0.45, 0.3, 0.25]))
        bottom = rng.uniform(horizon + 0.05 * (height - horizon), height * 1.05)
        depth = (bottom - horizon) / (height - horizon)
        object_height = height * NEAR_HEIGHT[class_id] * zoom * depth * rng.uniform(0.8, 1.2)
        object_height = max(object_height, height * MIN_HEIGHT[class_id] * rng.uniform(1.0, 1.3))
        sprite = DRAWERS[class_id](rng, max(3, int(object_height)))
        h, w = sprite.alpha.shape
        x = int(rng.uniform(-0.25 * w, width - 0.75 * w))
        candidates.append((bottom, class_id, Sprite(x=x, y=int(bottom - h), rgb=sprite.rgb, alpha=sprite.alpha)))

    hidden = np.zeros((height, width), np.bool_)  # pixels already claimed by nearer instances
    kept: list[tuple[Sprite, list[float], int]] = []
    for _, class_id, sprite in sorted(candidates, key=lambda c: -c[0]):
        h, w = sprite.alpha.shape
        solid = sprite.alpha > 0.5
        total = int(solid.sum())
        x0, y0 = max(sprite.x, 0), max(sprite.y, 0)
        x1, y1 = min(sprite.x + w, width), min(sprite.y + h, height)
        if total == 0 or x1 <= x0 or y1 <= y0:
            continue
        in_frame = solid[y0 - sprite.y : y1 - sprite.y, x0 - sprite.x : x1 - sprite.x]
        visible = in_frame & ~hidden[y0:y1, x0:x1]
        if visible.sum() < MIN_VISIBLE * total:
            continue
        ys, xs = np.nonzero(visible)
        box = [float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1), float(y0 + ys.max() + 1)]
        if box[3] - box[1] < MIN_HEIGHT[class_id] * height * 0.5:
            continue
        hidden[y0:y1, x0:x1] |= in_frame
        kept.append((sprite, box, class_id))

    kept.reverse()  # paint far to near so nearer instances cover farther ones
    ordered: list[Sprite] = []
    for sprite, _, _ in kept:
        ordered += [shadow_of(rng, sprite), sprite]
    return ordered, [box for _, box, _ in kept], [class_id for _, _, class_id in kept]


def shadow_of(rng: np.random.Generator, sprite: Sprite) -> Sprite:
    """A soft dark ellipse on the ground under an instance; it darkens the ground, it is not a box."""
    h, w = sprite.alpha.shape
    sh, sw = max(3, h // 8), int(w * rng.uniform(1.0, 1.4)) + 2
    alpha = np.zeros((sh, sw), np.float32)
    cv2.ellipse(alpha, (sw // 2, sh // 2), (sw // 2, max(1, sh // 2)), 0, 0, 360, float(rng.uniform(0.2, 0.5)), -1)
    alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), max(0.5, sh / 4)), np.float32)
    return Sprite(
        x=sprite.x - (sw - w) // 2,
        y=sprite.y + h - sh // 2,
        rgb=np.zeros((sh, sw, 3), np.float32),
        alpha=alpha,
    )


def composite(canvas: NDArray[np.float32], sprite: Sprite) -> None:
    """Alpha-blend `sprite` into `canvas` in place, clipped to the frame."""
    height, width = canvas.shape[:2]
    h, w = sprite.alpha.shape
    x0, y0 = max(sprite.x, 0), max(sprite.y, 0)
    x1, y1 = min(sprite.x + w, width), min(sprite.y + h, height)
    if x1 <= x0 or y1 <= y0:
        return
    local = (slice(y0 - sprite.y, y1 - sprite.y), slice(x0 - sprite.x, x1 - sprite.x))
    alpha = sprite.alpha[local][..., None]
    region = canvas[y0:y1, x0:x1]
    region[:] = region * (1 - alpha) + sprite.rgb[local] * alpha


# ---------------------------------------------------------------------------------------------- camera


def lighting(rng: np.random.Generator, canvas: NDArray[np.float32]) -> NDArray[np.float32]:
    """A linear light gradient across the frame, a colour cast and sometimes a vignette."""
    height, width = canvas.shape[:2]
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    gain = rng.uniform(0.55, 1.25) + rng.uniform(-0.3, 0.3) * xs + rng.uniform(-0.3, 0.3) * ys
    if rng.random() < 0.3:
        gain = gain * (1 - rng.uniform(0.2, 0.5) * (xs**2 + ys**2) / 2)
    cast = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    return canvas * gain[..., None].astype(np.float32) * cast


def camera_artefacts(rng: np.random.Generator, canvas: NDArray[np.float32]) -> Image:
    """Optics blur or motion blur, sensor noise, then a JPEG round trip at a random quality."""
    if rng.random() < 0.4:
        canvas = np.asarray(cv2.GaussianBlur(canvas, (0, 0), float(rng.uniform(0.5, 1.5))), np.float32)
    elif rng.random() < 0.15:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        centre = (length / 2 - 0.5, length / 2 - 0.5)
        kernel = np.asarray(
            cv2.warpAffine(kernel, cv2.getRotationMatrix2D(centre, float(rng.uniform(0, 180)), 1.0), (length, length)),
            np.float32,
        )
        canvas = np.asarray(cv2.filter2D(canvas, -1, kernel / max(float(kernel.sum()), 1e-6)), np.float32)
    sigma = rng.uniform(0, 10)
    canvas = canvas + rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sigma)
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    quality = int(rng.integers(30, 96))
    ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert decoded is not None
    return np.ascontiguousarray(decoded[..., ::-1], dtype=np.uint8)
