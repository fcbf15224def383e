"""A small ResNet over the generated pattern images, its training, and its ONNX and TorchScript exports.

Both exports take `images` float32 [batch, 3, 224, 224] RGB normalised with the ImageNet mean and std and
return `output0` [batch, classes] softmax probabilities, as Ultralytics classify exports do.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from vss_models.export import onnx_bytes, ultralytics_metadata, with_metadata, write_torchscript
from vss_models.inference import IMAGENET_MEAN, IMAGENET_STD
from vss_models.patterns import IMAGE_SIZE, PATTERN_CLASSES, PatternImage, generate_pattern_image
from vss_models.training import ConvBnAct, TrainingLog, update_average, warmup_cosine


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that decides the trained weights; hashed into the build cache key."""

    widths: tuple[int, int, int, int] = (32, 64, 128, 192)
    # Measured on held-out images: 84% top-1 after 300 steps, 94.8% after 624, so ~940 steps.
    train_images: int = 6000
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.05
    seed: int = 2
    classes: tuple[str, ...] = field(default=PATTERN_CLASSES)


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 convolutions and a (projected where the shape changes) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBnAct(c_in, c_out, 3, stride),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.body(x) + self.shortcut(x))


class Luminance(nn.Module):
    """Undo the ImageNet normalisation and keep only luma (BT.601), standardised.

    The classes are patterns whatever their colours, and the generator paints them in any two colours.
    With the chroma channels in, a small net spends much of a short training run learning to ignore
    them; on luma alone it learned several times faster on our generated data.
    """

    def __init__(self) -> None:
        super().__init__()
        luma = torch.tensor([0.299, 0.587, 0.114])
        std, mean = torch.from_numpy(IMAGENET_STD), torch.from_numpy(IMAGENET_MEAN)
        # luma(x * std + mean) = sum(luma * std * x) + sum(luma * mean), folded into one 1x1 convolution.
        self.weight: Tensor
        self.bias: Tensor
        self.register_buffer("weight", (luma * std / 0.25).view(1, 3, 1, 1))
        self.register_buffer("bias", ((luma * mean).sum() - 0.45).view(1) / 0.25)

    def forward(self, images: Tensor) -> Tensor:
        return F.conv2d(images, self.weight, self.bias)


class ClassifierNet(nn.Module):
    """Luma, a stride-4 stem, residual stages at strides 8, 16, 32, then average and max pooling into a
    linear layer. (Working at half resolution was 2x cheaper a step but learned far less per second.)

    Max pooling keeps evidence that is local and sparse (a joint of bricks, a honeycomb vertex) from being
    washed out by averaging over the whole frame. `forward` returns logits;
    `Probabilities` adds the softmax for export.
    """

    def __init__(self, num_classes: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.features = nn.Sequential(
            Luminance(),
            # Two 3x3/2 convolutions rather than one 4x4/4 patch: fine stripes and grids alias otherwise.
            ConvBnAct(1, w0 // 2, 3, 2),
            ConvBnAct(w0 // 2, w0, 3, 2),
            BasicBlock(w0, w1, 2),
            BasicBlock(w1, w2, 2),
            BasicBlock(w2, w3, 2),
        )
        self.classify = nn.Linear(2 * w3, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        features = self.features(images)
        pooled = torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1)
        return self.classify(pooled)  # type: ignore[no-any-return]


class Probabilities(nn.Module):
    def __init__(self, net: ClassifierNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).softmax(-1)  # type: ignore[no-any-return]


def normalised_batch(images: np.ndarray[tuple[int, ...], np.dtype[np.uint8]]) -> Tensor:
    """NHWC uint8 RGB to contiguous NCHW float normalised with the ImageNet mean and std."""
    # Contiguous, not the channels-last view permute gives: torch 2.15's CPU convolution backward crashes
    # (SIGSEGV) on channels-last input to layers as narrow as 4 channels.
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float().div_(255)
    mean = torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)
    return (tensor - mean) / std


def training_images(config: ClassifierConfig) -> list[PatternImage]:
    return [generate_pattern_image(config.seed, i) for i in range(config.train_images)]


def train_classifier(
    config: ClassifierConfig, samples: list[PatternImage] | None = None, device: str = "cpu", log: bool = True
) -> tuple[ClassifierNet, TrainingLog]:
    """Train from scratch on generated pattern images (`training_images(config)` unless given)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    samples = training_images(config) if samples is None else samples
    images = np.stack([s.image for s in samples])
    labels = torch.tensor([s.class_id for s in samples])
    data_seconds = time.perf_counter() - started

    net = ClassifierNet(len(config.classes), config.widths).to(device)
    average = ClassifierNet(len(config.classes), config.widths).to(device)
    average.load_state_dict(net.state_dict())
    average.eval()
    steps_per_epoch = len(samples) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup = max(1, min(100, total_steps // 10))
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = warmup_cosine(optimiser, total_steps, warmup)
    step, loss_value = 0, float("nan")
    for epoch in range(config.epochs):
        order = rng.permutation(len(samples))
        for start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
            batch = order[start : start + config.batch_size]
            # No flips, turns or crops: the generator already draws every pattern at any orientation, phase
            # and scale, and on this data they slowed learning more than they curbed over-fitting.
            pixels = images[batch]
            net.train()
            loss = F.cross_entropy(
                net(normalised_batch(pixels).to(device)),
                labels[batch].to(device),
                label_smoothing=config.label_smoothing,
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            update_average(average, net, step, decay=0.995, ramp=50.0)
            step += 1
            loss_value = float(loss.detach())
            if log and step % 20 == 0:
                print(
                    f"classifier epoch {epoch} step {step}/{total_steps} loss {loss_value:.3f} "
                    f"{time.perf_counter() - started:.0f}s",
                    flush=True,
                )
    seconds = time.perf_counter() - started
    return average.cpu(), TrainingLog(seconds=seconds, data_seconds=data_seconds, steps=step, final_loss=loss_value)


def export_classifier_onnx(net: ClassifierNet, classes: tuple[str, ...], path: Path) -> None:
    """Write the classifier as an Ultralytics-style classify ONNX export with a dynamic batch."""
    model = onnx_bytes(
        Probabilities(net).eval(),
        torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),
        {"images": {0: "batch"}, "output0": {0: "batch"}},
    )
    metadata = ultralytics_metadata(classes, "classify", IMAGE_SIZE, 32)
    metadata["normalization"] = json.dumps({"mean": IMAGENET_MEAN.tolist(), "std": IMAGENET_STD.tolist()})
    path.write_bytes(with_metadata(model, metadata, ["batch", len(classes)]))


def export_classifier_torchscript(net: ClassifierNet, classes: tuple[str, ...], path: Path) -> None:
    write_torchscript(Probabilities(net), torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE), classes, path)
