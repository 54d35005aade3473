"""Batched image augmentation on whatever device holds the batch.

The paper's recipe: horizontal flip, colour jitter 0.4 (brightness, contrast, saturation),
random grayscale with probability 0.2. Optional: vertical flips and 90-degree rotations
(overhead scenes have no up) and a random resized crop. Parameters are drawn from a CPU
generator, so a seed gives the same augmentation on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = True
    dihedral: bool = False
    """Vertical flips and 90-degree rotations as well."""
    jitter: float = 0.4
    """Brightness, contrast and saturation factors drawn from [1 - j, 1 + j]."""
    grayscale: float = 0.2
    crop_scale: float = 1.0
    """Smallest area fraction of a random resized crop; 1.0 disables cropping."""


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def _random_resized_crop(x: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    area = _uniform(n, scale, 1.0, generator)
    log_ratio = _uniform(n, -0.2877, 0.2877, generator)  # aspect ratio in [3/4, 4/3]
    ratio = torch.exp(log_ratio)
    cw = torch.sqrt(area * ratio).clamp(max=1.0)
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = torch.rand(n, generator=generator) * (1 - cw) + cw / 2
    cy = torch.rand(n, generator=generator) * (1 - ch) + ch / 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = cw, cx * 2 - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy * 2 - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, 3, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment_batch(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> augmented float (B, 3, H, W) in [0, 1]."""
    x = images.float().div(255)
    n = x.shape[0]
    device = x.device

    def mask(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) < p).to(device).view(n, 1, 1, 1)

    if config.crop_scale < 1.0:
        x = _random_resized_crop(x, config.crop_scale, generator)
    if config.hflip:
        x = torch.where(mask(0.5), x.flip(-1), x)
    if config.dihedral:
        x = torch.where(mask(0.5), x.flip(-2), x)
        # A transpose plus the flips above covers all eight symmetries of the square.
        if x.shape[-1] == x.shape[-2]:
            x = torch.where(mask(0.5), x.transpose(-1, -2), x)
    if config.jitter > 0:
        low, high = max(0.0, 1 - config.jitter), 1 + config.jitter
        brightness = _uniform(n, low, high, generator).to(device).view(n, 1, 1, 1)
        contrast = _uniform(n, low, high, generator).to(device).view(n, 1, 1, 1)
        saturation = _uniform(n, low, high, generator).to(device).view(n, 1, 1, 1)
        x = (x * brightness).clamp(0, 1)
        mean = _gray(x).mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean).clamp(0, 1)
        gray = _gray(x)
        x = ((x - gray) * saturation + gray).clamp(0, 1)
    if config.grayscale > 0:
        x = torch.where(mask(config.grayscale), _gray(x).expand_as(x), x)
    return x
