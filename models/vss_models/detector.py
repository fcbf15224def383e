"""A small anchor-free detector in the YOLOv8 mould, its training on generated scenes, and its ONNX export.

The exported graph has the Ultralytics YOLOv8 detect layout, so anything that serves a YOLOv8 export serves
it: input `images` float32 [batch, 3, height, width] RGB in [0, 1]; output `output0` float32
[batch, 4 + classes, anchors] with rows cx, cy, w, h (input pixels) then per-class sigmoid scores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from numpy.typing import NDArray
from torch import Tensor, nn

from vss_models.export import onnx_bytes, ultralytics_metadata, with_metadata
from vss_models.scenes import DETECTION_CLASSES, FRAME_SIZES, generate_scene
from vss_models.training import ConvBnAct, TrainingLog, update_average, warmup_cosine
from vss_transformers.letterbox import PAD_VALUE, letterbox_geometry

STRIDES: Final = (8, 16, 32)
INPUT_SIZE: Final = 640


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that decides the trained weights; hashed into the build cache key."""

    widths: tuple[int, int, int, int] = (24, 32, 64, 128)
    # Sweeps on this recipe: mAP@0.5 grew with optimiser steps (0.70 at ~370, 0.84-0.86 at ~750) and
    # hardly with distinct scenes (3000 x 4 epochs matched 6000 x 2), so few scenes, many epochs.
    train_scenes: int = 1600
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    # Share of training scenes drawn at the camera's real size and letterboxed, rather than drawn at 640.
    full_size_share: float = 0.15
    seed: int = 1
    classes: tuple[str, ...] = field(default=DETECTION_CLASSES)


# ---------------------------------------------------------------------------------------------- network


class CrossStage(nn.Module):
    """CSP block: half the channels go through residual 3x3 pairs, the other half skip them (as in C2f)."""

    def __init__(self, channels: int, depth: int = 1) -> None:
        super().__init__()
        half = channels // 2
        self.split = ConvBnAct(channels, 2 * half, 1)
        self.blocks = nn.ModuleList(nn.Sequential(ConvBnAct(half, half), ConvBnAct(half, half)) for _ in range(depth))
        self.merge = ConvBnAct((2 + depth) * half, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.split(x).chunk(2, 1))
        for block in self.blocks:
            parts.append(parts[-1] + block(parts[-1]))
        return self.merge(torch.cat(parts, 1))  # type: ignore[no-any-return]


class DetectorNet(nn.Module):
    """A patchify stem to stride 4, a CSP backbone to strides 8/16/32, a top-down and bottom-up neck, and a
    decoupled (box, class) head per stride. `widths` = (stem, stride 8, stride 16, stride 32)."""

    def __init__(self, num_classes: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        w0, w3, w4, w5 = widths
        self.num_classes = num_classes
        # A 4x4/4 convolution sees every pixel once: the cheapest stem that keeps small instances visible.
        self.stem = nn.Sequential(ConvBnAct(3, w0, 4, 4))
        self.down3 = nn.Sequential(ConvBnAct(w0, w3, 3, 2), CrossStage(w3))
        self.down4 = nn.Sequential(ConvBnAct(w3, w4, 3, 2), CrossStage(w4))
        self.down5 = nn.Sequential(ConvBnAct(w4, w5, 3, 2), CrossStage(w5))
        self.top_down4 = nn.Sequential(ConvBnAct(w5 + w4, w4, 1), CrossStage(w4))
        self.top_down3 = nn.Sequential(ConvBnAct(w4 + w3, w3, 1), CrossStage(w3))
        self.bottom_up4 = ConvBnAct(w3, w3, 3, 2)
        self.merge4 = nn.Sequential(ConvBnAct(w3 + w4, w4, 1), CrossStage(w4))
        self.bottom_up5 = ConvBnAct(w4, w4, 3, 2)
        self.merge5 = nn.Sequential(ConvBnAct(w4 + w5, w5, 1), CrossStage(w5))
        # Heads as wide as the stride-8 level at every stride: they dominate the cost otherwise.
        self.box_heads = nn.ModuleList(nn.Sequential(ConvBnAct(c, w3), nn.Conv2d(w3, 4, 1)) for c in (w3, w4, w5))
        self.class_heads = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, w3), nn.Conv2d(w3, num_classes, 1)) for c in (w3, w4, w5)
        )
        self.reset_head_biases()

    def reset_head_biases(self) -> None:
        """Start from rare positives (as YOLOv8 does) so early BCE is not swamped by background."""
        for stride, head in zip(STRIDES, self.class_heads, strict=True):
            assert isinstance(head, nn.Sequential)
            last = head[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            nn.init.constant_(last.bias, math.log(5 / self.num_classes / (INPUT_SIZE / stride) ** 2))
        for head in self.box_heads:
            assert isinstance(head, nn.Sequential)
            last = head[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            nn.init.constant_(last.bias, 1.0)

    def forward(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per stride: raw box distances [B, 4, h, w] and class logits [B, nc, h, w]."""
        c3 = self.down3(self.stem(images))
        c4 = self.down4(c3)
        c5 = self.down5(c4)
        p4 = self.top_down4(torch.cat([F.interpolate(c5, size=c4.shape[2:], mode="nearest"), c4], 1))
        p3 = self.top_down3(torch.cat([F.interpolate(p4, size=c3.shape[2:], mode="nearest"), c3], 1))
        n4 = self.merge4(torch.cat([self.bottom_up4(p3), p4], 1))
        n5 = self.merge5(torch.cat([self.bottom_up5(n4), c5], 1))
        return [
            (box_head(level), class_head(level))
            for level, box_head, class_head in zip((p3, n4, n5), self.box_heads, self.class_heads, strict=True)
        ]


def anchor_points(levels: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Cell centres [A, 2] in input pixels and their strides [A, 1], level by level, row-major."""
    points, strides = [], []
    for (boxes, _), stride in zip(levels, STRIDES, strict=True):
        height, width = boxes.shape[2], boxes.shape[3]
        ys = (torch.arange(height, dtype=boxes.dtype, device=boxes.device) + 0.5) * stride
        xs = (torch.arange(width, dtype=boxes.dtype, device=boxes.device) + 0.5) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x, grid_y], -1).reshape(-1, 2))
        strides.append(torch.full_like(grid_x, stride).reshape(-1, 1))
    return torch.cat(points), torch.cat(strides)


def decode(levels: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flatten the levels: boxes x1y1x2y2 [B, A, 4] in pixels, class logits [B, A, nc], anchors, strides."""
    points, strides = anchor_points(levels)
    distances = torch.cat([F.softplus(boxes).flatten(2) for boxes, _ in levels], 2).transpose(1, 2)
    logits = torch.cat([logits.flatten(2) for _, logits in levels], 2).transpose(1, 2)
    distances = distances * strides
    boxes = torch.cat([points - distances[..., :2], points + distances[..., 2:]], -1)
    return boxes, logits, points, strides


class UltralyticsLayout(nn.Module):
    """The export wrapper: [B, 4 + nc, A] with cx, cy, w, h rows and sigmoid class scores."""

    def __init__(self, net: DetectorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        boxes, logits, _, _ = decode(self.net(images))
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        size = boxes[..., 2:] - boxes[..., :2]
        return torch.cat([centre, size, logits.sigmoid()], -1).transpose(1, 2)


# -------------------------------------------------------------------------------------------- assigner, loss


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of broadcastable x1y1x2y2 boxes [..., 4]."""
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + 1e-7)


def complete_iou(a: Tensor, b: Tensor) -> Tensor:
    """CIoU of x1y1x2y2 boxes [..., 4]: IoU minus centre distance and aspect-ratio penalties."""
    iou = box_iou(a, b)
    enclosing = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    diagonal = enclosing.pow(2).sum(-1) + 1e-7
    centre_distance = ((a[..., :2] + a[..., 2:]) - (b[..., :2] + b[..., 2:])).pow(2).sum(-1) / 4
    wa, ha = (a[..., 2] - a[..., 0]).clamp(min=1e-7), (a[..., 3] - a[..., 1]).clamp(min=1e-7)
    wb, hb = (b[..., 2] - b[..., 0]).clamp(min=1e-7), (b[..., 3] - b[..., 1]).clamp(min=1e-7)
    v = (4 / math.pi**2) * (torch.atan(wb / hb) - torch.atan(wa / ha)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + 1 + 1e-7)
    return iou - centre_distance / diagonal - alpha * v


@dataclass(frozen=True)
class Assignment:
    target_boxes: Tensor  # [B, A, 4]
    target_scores: Tensor  # [B, A, nc], IoU-aware soft labels, 0 for background
    positive: Tensor  # [B, A] bool


@torch.no_grad()
def assign_targets(
    scores: Tensor,
    boxes: Tensor,
    points: Tensor,
    strides: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_valid: Tensor,
    top_k: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
) -> Assignment:
    """Task-aligned assignment (TOOD/YOLOv8): each box takes the `top_k` anchors near it whose
    predictions score best on `score^alpha * IoU^beta`; an anchor claimed by several boxes goes to the one
    it overlaps most.

    Candidates are anchors inside the box, widened to at least one stride so tiny boxes still get some.
    """
    anchors, num_classes = scores.shape[1:]
    # [B, G, A] geometry of candidates
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    half = ((gt_boxes[..., 2:] - gt_boxes[..., :2]) / 2)[:, :, None, :]  # [B, G, 1, 2]
    reach = torch.maximum(half, strides[None, None, :, :] / 2)  # [B, G, A, 2]
    offset = (points[None, None] - centre[:, :, None, :]).abs()
    candidate = (offset < reach).all(-1) & gt_valid[..., None]

    label_index = gt_labels.clamp(min=0)[:, :, None].expand(-1, -1, anchors)  # [B, G, A]
    class_scores = scores.transpose(1, 2).gather(1, label_index)  # [B, G, A]
    overlaps = box_iou(gt_boxes[:, :, None, :], boxes[:, None, :, :]).clamp(min=0)  # [B, G, A]
    overlaps = overlaps * candidate
    alignment = class_scores.pow(alpha) * overlaps.pow(beta) * candidate
    # Break ties among candidates while predictions are still random: prefer anchors near the centre.
    alignment = alignment + candidate * 1e-9 / (1 + offset.sum(-1))

    k = min(top_k, anchors)
    top = alignment.topk(k, dim=-1).indices
    chosen = torch.zeros_like(candidate).scatter_(-1, top, True) & candidate & (alignment > 0)

    claims = chosen.sum(1)  # [B, A]
    contested = claims > 1
    if bool(contested.any()):
        best = overlaps.argmax(1)  # [B, A]
        best_mask = F.one_hot(best, gt_boxes.shape[1]).permute(0, 2, 1).bool()
        chosen = torch.where(contested[:, None, :], best_mask & chosen.any(1, keepdim=True), chosen)
    positive = chosen.any(1)
    owner = chosen.float().argmax(1)  # [B, A]

    target_boxes = gt_boxes.gather(1, owner[..., None].expand(-1, -1, 4))
    target_labels = gt_labels.gather(1, owner).clamp(min=0)
    alignment = alignment * chosen
    best_alignment = alignment.amax(-1, keepdim=True)
    best_overlap = (overlaps * chosen).amax(-1, keepdim=True)
    normalised = (alignment * best_overlap / (best_alignment + 1e-9)).amax(1)  # [B, A]
    target_scores = F.one_hot(target_labels, num_classes).float() * (normalised * positive)[..., None]
    return Assignment(target_boxes=target_boxes, target_scores=target_scores, positive=positive)


def detection_loss(
    levels: list[tuple[Tensor, Tensor]], gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """YOLOv8-style loss: BCE against IoU-aware soft labels, plus CIoU and stride-scaled L1 on positives."""
    boxes, logits, points, strides = decode(levels)
    assignment = assign_targets(
        logits.detach().sigmoid(), boxes.detach(), points, strides, gt_boxes, gt_labels, gt_valid
    )
    normaliser = assignment.target_scores.sum().clamp(min=1.0)
    class_loss = F.binary_cross_entropy_with_logits(logits, assignment.target_scores, reduction="sum") / normaliser
    positive = assignment.positive
    if bool(positive.any()):
        weight = assignment.target_scores.sum(-1)[positive]
        predicted, target = boxes[positive], assignment.target_boxes[positive]
        iou_loss = ((1 - complete_iou(predicted, target)) * weight).sum() / normaliser
        scale = strides[None].expand(boxes.shape[0], -1, -1)[positive]
        l1_loss = ((predicted - target).abs() / scale).mean(-1).mul(weight).sum() / normaliser
    else:
        iou_loss = l1_loss = boxes.sum() * 0
    total = 7.5 * iou_loss + 1.0 * l1_loss + 1.0 * class_loss
    parts = {
        "box": float(iou_loss.detach()),
        "l1": float(l1_loss.detach()),
        "cls": float(class_loss.detach()),
    }
    return total, parts


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class TrainingScene:
    """A scene already letterboxed to the 640 scale (content only, no padding) with its boxes there."""

    image: NDArray[np.uint8]
    boxes: NDArray[np.float32]
    class_ids: NDArray[np.int64]


def training_scene(seed: int, index: int, full_size: bool) -> TrainingScene:
    """Scene `index`, either drawn at its camera size and shrunk to 640, or drawn at its 640-scale size."""
    rng = np.random.default_rng([seed, index, 7])
    frame_w, frame_h = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    (resized_h, resized_w), placement = letterbox_geometry((frame_h, frame_w), (INPUT_SIZE, INPUT_SIZE))
    if full_size:
        scene = generate_scene(seed, index, (frame_w, frame_h))
        image = np.asarray(cv2.resize(scene.image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR), np.uint8)
        boxes = scene.boxes * np.float32(placement.scale)
    else:
        scene = generate_scene(seed, index, (resized_w, resized_h))
        image, boxes = scene.image, scene.boxes
    return TrainingScene(image=image, boxes=boxes, class_ids=scene.class_ids)


def training_batch(
    scenes: list[TrainingScene], rng: np.random.Generator, max_boxes: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack scenes of one shape into a batch: random flips, a scale jitter, and gray letterbox bands so
    the network sees the padding it meets when frames are letterboxed to 640x640."""
    height, width = scenes[0].image.shape[:2]
    scale = float(rng.choice([0.75, 0.875, 1.0, 1.0]))
    content_w, content_h = round(width * scale), round(height * scale)
    canvas_w = math.ceil(content_w / 32) * 32
    canvas_h = math.ceil((content_h + int(rng.integers(0, 96))) / 32) * 32
    images = np.full((len(scenes), canvas_h, canvas_w, 3), PAD_VALUE, np.uint8)
    gt_boxes = np.zeros((len(scenes), max_boxes, 4), np.float32)
    gt_labels = np.full((len(scenes), max_boxes), -1, np.int64)
    for i, scene in enumerate(scenes):
        image = scene.image
        if scale != 1.0:
            image = np.asarray(cv2.resize(image, (content_w, content_h), interpolation=cv2.INTER_AREA), np.uint8)
        boxes = scene.boxes * np.float32(scale)
        if rng.random() < 0.5:
            image = image[:, ::-1]
            boxes = np.stack([content_w - boxes[:, 2], boxes[:, 1], content_w - boxes[:, 0], boxes[:, 3]], 1)
        pad_x = int(rng.integers(0, canvas_w - content_w + 1))
        pad_y = int(rng.integers(0, canvas_h - content_h + 1))
        images[i, pad_y : pad_y + content_h, pad_x : pad_x + content_w] = image
        count = min(len(boxes), max_boxes)
        gt_boxes[i, :count] = boxes[:count] + np.array([pad_x, pad_y, pad_x, pad_y], np.float32)
        gt_labels[i, :count] = scene.class_ids[:count]
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    labels = torch.from_numpy(gt_labels)
    return tensor, torch.from_numpy(gt_boxes), labels, labels >= 0


# ---------------------------------------------------------------------------------------------- training


def training_scenes(config: DetectorConfig) -> list[TrainingScene]:
    """The scenes a config trains on, a quarter of them drawn at camera size and shrunk like a real frame."""
    full_size = np.random.default_rng([config.seed, 3]).random(config.train_scenes) < config.full_size_share
    return [training_scene(config.seed, i, bool(full_size[i])) for i in range(config.train_scenes)]


def train_detector(
    config: DetectorConfig, scenes: list[TrainingScene] | None = None, device: str = "cpu", log: bool = True
) -> tuple[DetectorNet, TrainingLog]:
    """Train from scratch on generated scenes (`training_scenes(config)` unless given); on the CPU the weights
    are a function of the config and the thread count."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    scenes = training_scenes(config) if scenes is None else scenes
    data_seconds = time.perf_counter() - started
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, scene in enumerate(scenes):
        by_shape.setdefault(scene.image.shape, []).append(i)

    net = DetectorNet(len(config.classes), config.widths).to(device)
    average = DetectorNet(len(config.classes), config.widths).to(device)
    average.load_state_dict(net.state_dict())
    average.eval()
    batches_per_epoch = sum(len(v) // config.batch_size for v in by_shape.values())
    total_steps = batches_per_epoch * config.epochs
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.99)
    )
    schedule = warmup_cosine(optimiser, total_steps, warmup=max(1, min(200, total_steps // 10)))
    step, loss_value = 0, float("nan")
    for epoch in range(config.epochs):
        order = []
        for indices in by_shape.values():
            shuffled = rng.permutation(indices)
            order += [
                shuffled[i : i + config.batch_size]
                for i in range(0, len(shuffled) - config.batch_size + 1, config.batch_size)
            ]
        for batch_index in rng.permutation(len(order)):
            batch = [scenes[i] for i in order[batch_index]]
            images, gt_boxes, gt_labels, gt_valid = (
                t.to(device) for t in training_batch(batch, rng, max(1, max(len(s.boxes) for s in batch)))
            )
            net.train()
            loss, parts = detection_loss(net(images), gt_boxes, gt_labels, gt_valid)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            optimiser.step()
            schedule.step()
            update_average(average, net, step, decay=0.998, ramp=100.0)
            step += 1
            loss_value = float(loss.detach())
            if log and step % 20 == 0:
                print(
                    f"detector epoch {epoch} step {step}/{total_steps} loss {loss_value:.3f} "
                    + " ".join(f"{k} {v:.3f}" for k, v in parts.items())
                    + f" {time.perf_counter() - started:.0f}s",
                    flush=True,
                )
    seconds = time.perf_counter() - started
    return average.cpu(), TrainingLog(seconds=seconds, data_seconds=data_seconds, steps=step, final_loss=loss_value)


# ---------------------------------------------------------------------------------------------- export


def export_detector(net: DetectorNet, classes: tuple[str, ...], path: Path) -> None:
    """Write the detector as an Ultralytics-layout YOLOv8 ONNX export with dynamic batch, height, width."""
    layout = UltralyticsLayout(net).eval()
    model = onnx_bytes(
        layout,
        torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),
        {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}},
    )
    metadata = ultralytics_metadata(classes, "detect", INPUT_SIZE, max(STRIDES))
    path.write_bytes(with_metadata(model, metadata, ["batch", 4 + len(classes), "anchors"]))
