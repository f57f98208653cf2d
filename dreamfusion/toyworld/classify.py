"""Classify toy-world images by colour and shape, for checking the prior and the 3D results.

Colour: the mean chromaticity of the foreground (each pixel divided by its brightest channel, so
shading cancels) matched to the palette's. Shape: the foreground silhouette matched by IoU against
a bank of silhouettes of every shape on a dense grid of the toy cameras' views (SilhouetteBank). A marked cube has
a cube's silhouette, so shape "cube" and "marked cube" both count as a cube here.
"""
from __future__ import annotations

import math

import torch

from ..cameras import make_cameras
from ..render.shading import LightConfig
from .dataset import TOY_CAMERAS
from .scenes import ToyRenderConfig, render_object
from .vocabulary import COLOURS, SHAPES


def foreground(img: torch.Tensor, threshold: float = 0.04) -> torch.Tensor:
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


# Azimuth period of each shape's silhouette: every shape but the cube is a solid of revolution about z.
AZIMUTH_PERIOD: dict[str, float] = {"cube": 90.0}


class SilhouetteBank:
    """Silhouettes of every shape on a dense grid of views, for nearest-silhouette classification.

    The grid spans the toy cameras' elevations, their apparent object sizes (distance x tan(fovy/2),
    sampled finely: with coarse size steps a cube seen corner-on beats a sphere between two sizes)
    and, for shapes that are not solids of revolution, azimuths over one symmetry period. On the
    toy world's own renders it classifies 99-100% of shapes right (scripts/check_toy_prior.py --ground-truth).
    """

    def __init__(self, resolution: int = 32, elevation_step: float = 5.0, n_sizes: int = 20, azimuth_step: float = 7.5):
        lo_el, hi_el = TOY_CAMERAS.elevation_range
        elevations = torch.arange(lo_el, hi_el + 1e-3, elevation_step)
        d = sum(TOY_CAMERAS.distance_range) / 2
        sizes = [dist * math.tan(math.radians(f) / 2) for dist, f in zip(TOY_CAMERAS.distance_range, TOY_CAMERAS.fovy_range)]
        sizes = torch.exp(torch.linspace(math.log(sizes[0] * 0.9), math.log(sizes[1] * 1.1), n_sizes))
        cfg, gen = ToyRenderConfig(resolution=resolution), torch.Generator().manual_seed(0)
        masks, labels = [], []
        for shape in SHAPES:
            period = AZIMUTH_PERIOD.get(shape, 0.0)
            azimuths = torch.arange(0.0, period, azimuth_step) if period else torch.zeros(1)
            el, az, size = (g.flatten() for g in torch.meshgrid(elevations, azimuths, sizes, indexing="ij"))
            cams = make_cameras(el, az, torch.full_like(el, d), torch.rad2deg(2 * torch.atan(size / d)))
            for i in range(0, cams.batch_size, 256):
                _, mask = render_object(shape, "white", cams[i : i + 256], cfg, LightConfig(), gen)
                masks.append(mask > 0.5)
            labels += [shape] * cams.batch_size
        self.masks = torch.cat(masks).flatten(1).float()  # (M, H*W)
        self.labels = labels

    def classify(self, mask: torch.Tensor) -> list[str]:
        """Shape name per (B, H, W) boolean mask: the label of the bank silhouette of highest IoU."""
        m = mask.flatten(1).float()  # (B, H*W)
        inter = m @ self.masks.T
        union = m.sum(1, keepdim=True) + self.masks.sum(1) - inter
        iou = inter / union.clamp_min(1)
        return [self.labels[j] for j in iou.argmax(1).tolist()]


def same_shape(predicted: str, wanted: str) -> bool:
    return predicted == ("cube" if wanted == "marked cube" else wanted)


def shows_mark(img: torch.Tensor) -> torch.Tensor:
    """(B,) bool: does a chromatic toy object (B, H, W, 3) in [0, 1] show a light patch inside its body?

    The marked cube's white square is the only light, unsaturated region a coloured object can
    enclose: a background showing between faces touches the border, lighting never desaturates.
    Counts pixels enclosed by the saturated body (hole filling) and brighter than 0.55; two or more
    make a mark. On true renders (scripts/check_toy_prior.py --mark-check) it never fires on a plain
    cube or a back view and finds 83-86% of the marks seen from the front (a mark seen at a slant,
    or touching a blurred edge, is missed). White objects, whose mark is dark, are not handled.
    """
    from scipy.ndimage import binary_fill_holes

    hi, lo = img.amax(-1), img.amin(-1)  # (B, H, W)
    body = ((hi - lo) / hi.clamp_min(1e-3) > 0.35).numpy()
    light = (hi > 0.55).numpy()
    return torch.tensor([bool((binary_fill_holes(b) & ~b & w).sum() >= 2) for b, w in zip(body, light)])
