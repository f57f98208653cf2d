"""Image helpers: tensors in [0, 1] to uint8 arrays and PNG files, normal/depth visualisation."""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(H, W, C) float in [0, 1] → (H, W, C) uint8 (one channel is repeated to three)."""
    img = image.detach().float().clamp(0, 1).cpu()
    if img.shape[-1] == 1:
        img = img.expand(*img.shape[:-1], 3)
    return (img.numpy() * 255.0 + 0.5).astype(np.uint8)


def normal_to_rgb(normal: torch.Tensor, opacity: torch.Tensor, background: float = 1.0) -> torch.Tensor:
    """World normals (…, 3) in [-1, 1] → colours, background where the opacity is zero."""
    return (normal * 0.5 + 0.5) * opacity + background * (1 - opacity)


def save_png(path: str | Path, image: torch.Tensor) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(image))
