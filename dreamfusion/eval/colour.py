"""Colour of an asset against the truth, in CIE Lab: is it the colour the prompt names?

Hue alone calls a maroon cube red. Here the asset's colour is the area-weighted mean of its
exported texture (points spread evenly over the surface, each reading the baked texture through its
UV), compared in CIE Lab (sRGB → linear → XYZ, D65 → L*a*b*) with the true object's mean albedo:
the palette colour (`toyworld/vocabulary.py`), or for a marked cube the palette blended with its
mark by area. CIE76 ΔE = ‖Lab₁ − Lab₂‖ (≈ 2 just visible, > 10 another colour), with its lightness
part ΔL* and chroma part ΔC* (C* = √(a*² + b*²)) apart, so "too dark" and "too saturated" show
as themselves. Albedo values are treated as sRGB-encoded, as every render and the prior's data do.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

# sRGB (D65) linear RGB → XYZ, and the D65 white point (IEC 61966-2-1)
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_D65 = np.array([0.95047, 1.0, 1.08883])
WHITE_MIN_LIGHTNESS = 80.0  # L*: a "white" asset darker than this is grey (the palette white is L* 94)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (..., 3) of sRGB colours (..., 3) in [0, 1]."""
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _D65
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


@dataclass
class ColourDifference:
    delta_e: float  # CIE76: |Lab - Lab_true|
    delta_lightness: float  # L* - L*_true: negative = too dark
    delta_chroma: float  # C* - C*_true: positive = over-saturated


def colour_difference(rgb: np.ndarray, truth: np.ndarray) -> ColourDifference:
    """ΔE, ΔL* and ΔC* of one sRGB colour (3,) against the true one (3,)."""
    lab, ref = srgb_to_lab(rgb), srgb_to_lab(truth)
    chroma = lambda v: float(np.hypot(v[1], v[2]))  # noqa: E731
    return ColourDifference(float(np.linalg.norm(lab - ref)), float(lab[0] - ref[0]), chroma(lab) - chroma(ref))


@functools.lru_cache(maxsize=None)
def true_mean_albedo(shape: str, colour: str) -> tuple[float, float, float]:
    """Area-weighted mean albedo of the true toy object (its palette colour; a marked cube's mark by area)."""
    import torch

    from ..toyworld.scenes import albedo
    from .geometry import true_surface

    points = torch.from_numpy(np.array(true_surface("cube" if shape == "marked cube" else shape)))
    return tuple(float(v) for v in albedo(shape, colour, points).mean(0))


def _texture_lookup(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture reads (N, 3) in [0, 1] of an image (H, W, C) at UVs (N, 2) (v up, OpenGL/OBJ)."""
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image[..., :3].astype(np.float64) / 255.0
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def surface_colours(mesh: trimesh.Trimesh, n: int = 20000, seed: int = 0) -> np.ndarray:
    """Colours (n, 3) in [0, 1] at area-weighted points of a mesh: from its texture through the UVs,
    else interpolated from its vertex colours."""
    from .geometry import sample_surface

    faces = np.asarray(mesh.faces)
    points, face = sample_surface(np.asarray(mesh.vertices), faces, n, seed=seed)
    bary = trimesh.triangles.points_to_barycentric(np.asarray(mesh.vertices)[faces[face]], points)
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None:
        image = getattr(visual.material, "baseColorTexture", None) or getattr(visual.material, "image", None)
        if image is not None:
            uv = (np.asarray(visual.uv)[faces[face]] * bary[:, :, None]).sum(1)
            return _texture_lookup(np.asarray(image.convert("RGB")), uv)
    colours = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    return (colours[faces[face]] * bary[:, :, None]).sum(1)


def mean_texture_colour(mesh_dir: str | Path) -> np.ndarray:
    """Area-weighted mean albedo (3,) of an exported asset's texture (model.glb / .obj, else .ply's colours)."""
    from ..export import load_exported_mesh

    return surface_colours(load_exported_mesh(mesh_dir)).mean(0)
