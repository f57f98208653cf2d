"""gsplat's CUDA rasterizer behind the same probe-and-fallback as the other accelerators.

`gsplat_available()` imports gsplat and renders one Gaussian forward and backward on this GPU
once per process; when it fails (not installed, no GPU, a kernel that does not build) the torch
renderer (splat.py) is used. Both return the same images for the same Gaussians (tests/test_cuda.py).
Unverified until a `cuda` test has passed on a GPU.
"""
from __future__ import annotations

import torch

from ..cameras import Cameras, focal_length
from ..utils.capabilities import probe

# OpenGL camera axes (ours: -z forward, +y up) to OpenCV's (gsplat: +z forward, +y down)
GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def _check_gsplat() -> None:
    from .model import random_ball
    from ..cameras import make_cameras

    gen = torch.Generator().manual_seed(0)
    g = random_ball(4, 0.3, 0.05, 0.5, 0.5, gen, "cuda")
    means = g.means.requires_grad_()
    cams = make_cameras(*(torch.tensor([v], device="cuda") for v in (15.0, 0.0, 2.0, 45.0)))
    feats, alpha, _, _ = render_gsplat(means, g.quats, g.log_scales, torch.sigmoid(g.opacity_logits),
                                       torch.sigmoid(g.albedo_logits)[None], cams, 16, 16)
    (feats.sum() + alpha.sum()).backward()
    if means.grad is None or not torch.isfinite(means.grad).all():
        raise RuntimeError("gsplat gave no finite gradient")


def gsplat_available() -> bool:
    """gsplat imports and renders a few Gaussians forward and backward on this GPU."""
    if not torch.cuda.is_available():
        return False
    return probe("gsplat", _check_gsplat, "Install gsplat built for this GPU, or set representation.backend=torch to silence this.")


def render_gsplat(means: torch.Tensor, quats: torch.Tensor, log_scales: torch.Tensor, opacities: torch.Tensor,
                  features: torch.Tensor, cameras: Cameras, height: int, width: int, near: float = 0.05,
                  eps2d: float = 0.3, tile: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """((B, H, W, C) features, (B, H, W, 1) alpha, (B, N, 2) screen means, (B, N) radii) by gsplat."""
    from gsplat import rasterization

    B = cameras.batch_size
    viewmats = GL_TO_CV.to(means) @ torch.linalg.inv(cameras.c2w.to(means))
    f = focal_length(cameras.fovy, height).to(means)
    ks = torch.zeros(B, 3, 3, dtype=means.dtype, device=means.device)
    ks[:, 0, 0], ks[:, 1, 1], ks[:, 0, 2], ks[:, 1, 2], ks[:, 2, 2] = f, f, 0.5 * width, 0.5 * height, 1.0
    colours, alphas, meta = rasterization(means, torch.nn.functional.normalize(quats, dim=-1), log_scales.exp(), opacities,
                                          features, viewmats, ks, width, height, near_plane=near,
                                          eps2d=eps2d, packed=False, tile_size=tile, render_mode="RGB")
    radii = meta["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5: per-axis radii
        radii = radii.max(-1).values
    return colours, alphas, meta["means2d"], radii
