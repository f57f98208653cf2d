"""Classify toy-world images by colour and shape, for checking the prior and the 3D results.

Colour: the mean chromaticity of the foreground (each pixel divided by its brightest channel, so
shading cancels) matched to the palette's. Shape: the foreground silhouette matched by IoU against
a bank of silhouettes of every shape rendered from the toy camera distribution. A marked cube has
a cube's silhouette, so shape "cube" and "marked cube" both count as a cube here.
"""
from __future__ import annotations

import torch

from ..render.shading import LightConfig
from .dataset import TOY_CAMERAS
from .scenes import ToyRenderConfig, render_random
from .vocabulary import COLOURS, SHAPES


def foreground(img: torch.Tensor, threshold: float = 0.12) -> torch.Tensor:
    """(B, H, W) mask of pixels differing from the border colour (the solid background)."""
    border = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], dim=1)  # (B, 4W, 3)
    bg = border.median(dim=1).values  # (B, 3)
    return (img - bg[:, None, None]).abs().amax(-1) > threshold


def _chroma(rgb: torch.Tensor) -> torch.Tensor:
    return rgb / rgb.amax(-1, keepdim=True).clamp_min(1e-3)


def nearest_colour(pixels: torch.Tensor) -> str:
    """Palette name nearest to the mean chromaticity of colour samples (N, 3)."""
    if pixels.shape[0] == 0:
        return "none"
    names = list(COLOURS)
    palette = _chroma(torch.tensor([COLOURS[n] for n in names]))
    bright = pixels.amax(-1) > 0.15  # the unlit side carries no colour
    c = _chroma(pixels[bright] if bright.any() else pixels).mean(0)
    return names[int((palette - c).norm(dim=-1).argmin())]


def classify_colour(img: torch.Tensor, mask: torch.Tensor) -> list[str]:
    return [nearest_colour(img[i][mask[i]]) for i in range(img.shape[0])]


class SilhouetteBank:
    def __init__(self, resolution: int = 32, views_per_shape: int = 150, seed: int = 123):
        gen = torch.Generator().manual_seed(seed)
        cfg = ToyRenderConfig(resolution=resolution)
        masks, labels = [], []
        for s in SHAPES:
            _, mask, _ = render_random(s, "white", views_per_shape, TOY_CAMERAS, cfg, LightConfig(), gen)
            masks.append(mask > 0.5)
            labels += [s] * views_per_shape
        self.masks = torch.cat(masks).flatten(1).float()  # (M, H*W)
        self.labels = labels

    def classify(self, mask: torch.Tensor) -> list[str]:
        m = mask.flatten(1).float()  # (B, H*W)
        inter = m @ self.masks.T
        union = m.sum(1, keepdim=True) + self.masks.sum(1) - inter
        iou = inter / union.clamp_min(1)
        return [self.labels[j] for j in iou.argmax(1).tolist()]


def same_shape(predicted: str, wanted: str) -> bool:
    return predicted == ("cube" if wanted == "marked cube" else wanted)
