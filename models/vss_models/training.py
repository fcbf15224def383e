"""What training both models shares: the conv-BN-SiLU unit, the warmup-cosine schedule, the weight average."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TrainingLog:
    seconds: float
    data_seconds: float
    steps: int
    final_loss: float


class ConvBnAct(nn.Sequential):
    """Convolution, batch norm, SiLU: the unit YOLOv8 builds everything from."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2 if kernel % 2 else 0, bias=False),
            nn.BatchNorm2d(c_out),
            nn.SiLU(inplace=True),
        )


def warmup_cosine(optimiser: torch.optim.Optimizer, total_steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup` steps, then cosine decay to 2% of the peak learning rate."""

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup)
        return ramp * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


@torch.no_grad()
def update_average(average: nn.Module, net: nn.Module, step: int, decay: float, ramp: float) -> None:
    """Fold the current weights into an exponential moving average, ramped in early (as YOLOv5/v8 do):
    short schedules end far better on the average than on the last step's weights."""
    current_decay = decay * (1 - math.exp(-(step + 1) / ramp))
    for averaged, current in zip(average.state_dict().values(), net.state_dict().values(), strict=True):
        if averaged.dtype.is_floating_point:
            averaged.mul_(current_decay).add_(current.detach(), alpha=1 - current_decay)
        else:
            averaged.copy_(current)
