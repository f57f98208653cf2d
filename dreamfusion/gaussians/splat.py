"""A differentiable Gaussian splatting renderer in pure PyTorch (any device; the CPU path).

3DGS's algorithm with its constants: EWA projection of each Gaussian to a 2D one (plus eps2d px²),
a screen radius, (Gaussian, pixel) pairs sorted by pixel then depth (3DGS's tiles are single
pixels here: pixel_pairs says why), and per pixel an alpha-composite front to back,
alpha = min(0.99, o·exp(power)) dropped below 1/255, stopping where the transmittance would fall
below 1e-4. Gradients reach every parameter through autograd; the screen-space means are
returned so densification can read their gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..cameras import Cameras, focal_length

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4


@dataclass
class Projection:
    means2d: torch.Tensor  # (B, N, 2) pixel coordinates (x right, y down; pixel centres at +0.5)
    conics: torch.Tensor  # (B, N, 3) the inverse 2D covariance's (a, b, c): [[a, b], [b, c]]
    depths: torch.Tensor  # (B, N) distance along the camera's axis
    radii: torch.Tensor  # (B, N) long, screen radius in pixels; 0: culled (behind, off screen, degenerate)


def project(means: torch.Tensor, covs: torch.Tensor, cameras: Cameras, height: int, width: int,
            near: float = 0.05, eps2d: float = 0.3, opacities: torch.Tensor | None = None) -> Projection:
    """EWA splatting's projection of Gaussians (N) into every camera (B), OpenGL camera axes.

    The screen radius is 3 sigma, or, given the opacities (N,), where the alpha falls below 1/255
    (sqrt(2 ln(255 o)) sigma, at most 3.33): no pixel beyond it would be composited anyway."""
    rot, origin = cameras.c2w[:, :3, :3], cameras.c2w[:, :3, 3]  # (B, 3, 3) camera-to-world, (B, 3)
    p = torch.einsum("bji,bnj->bni", rot, means[None] - origin[:, None])  # (B, N, 3) camera coordinates
    f = focal_length(cameras.fovy, height).to(means.dtype).view(-1, 1)  # (B, 1)
    depth = -p[..., 2]
    d = depth.clamp_min(near)
    # the Jacobian at a point clamped to 1.3x the frustum (3DGS): off-screen Gaussians stay finite
    lim_x, lim_y = 1.3 * 0.5 * width / f, 1.3 * 0.5 * height / f
    tx, ty = (p[..., 0] / d).clamp(-lim_x, lim_x), (p[..., 1] / d).clamp(-lim_y, lim_y)
    u = 0.5 * width + f * p[..., 0] / d
    v = 0.5 * height - f * p[..., 1] / d
    zero = torch.zeros_like(d)
    jac = torch.stack([f / d, zero, f * tx / d, zero, -f / d, -f * ty / d], -1).view(*d.shape, 2, 3)
    t = jac @ rot.transpose(1, 2)[:, None]  # (B, N, 2, 3): world -> screen
    cov2d = t @ covs[None] @ t.transpose(-1, -2)  # (B, N, 2, 2)
    a, b, c = cov2d[..., 0, 0] + eps2d, cov2d[..., 0, 1], cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    ok = (depth > near) & (det > 0)
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c * inv, -b * inv, a * inv], -1)
    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = mid + (mid * mid - det).clamp_min(0.1).sqrt()
        sigmas = torch.full_like(d, 3.0) if opacities is None else \
            torch.sqrt(2.0 * torch.log((opacities.detach() / ALPHA_MIN).clamp_min(1.0)))[None].expand_as(d)
        radius = torch.ceil(sigmas * lam.clamp_min(0).sqrt())
        ok = ok & (u + radius > 0) & (u - radius < width) & (v + radius > 0) & (v - radius < height)
        radii = torch.where(ok, radius, torch.zeros_like(radius)).long()
    return Projection(torch.stack([u, v], -1), conics, depth, radii)


@dataclass
class PixelPairs:
    """(Gaussian, pixel) pairs sorted by pixel, then by depth (made with int32 indices: half the
    memory traffic, and a faster sort)."""

    gaussian: torch.Tensor  # (M,) flat b·N + n, into per-camera tensors
    local: torch.Tensor  # (M,) n, into per-Gaussian tensors
    pixel: torch.Tensor  # (M,) flat b·H·W + y·W + x
    x: torch.Tensor  # (M,) the pixel's column and row
    y: torch.Tensor

    def first(self) -> torch.Tensor:
        """(M,) long: the index of the first pair of each pair's pixel."""
        new_run = torch.ones_like(self.pixel, dtype=torch.bool)
        new_run[1:] = self.pixel[1:] != self.pixel[:-1]
        return new_run.nonzero().squeeze(1)[torch.cumsum(new_run, 0) - 1]

    def select(self, mask: torch.Tensor) -> "PixelPairs":
        """The pairs where `mask` holds, with int64 indices: index_add (the backward of the gathers
        and the compositing) is several times slower with int32 ones on the CPU."""
        keep = mask.nonzero().squeeze(1)
        return PixelPairs(*(t.index_select(0, keep).long() for t in (self.gaussian, self.local, self.pixel, self.x, self.y)))


@torch.no_grad()
def pixel_pairs(proj: Projection, height: int, width: int) -> PixelPairs:
    """Every pixel each Gaussian's screen radius reaches, nearest Gaussian first within each pixel.
    3DGS bins to 16-px tiles and then tests each pixel; at these image sizes a tile holds most
    Gaussians and most of its pixels fail the test, so the bins are single pixels."""
    B, N = proj.depths.shape
    u, v = proj.means2d[..., 0].reshape(-1), proj.means2d[..., 1].reshape(-1)
    r = proj.radii.reshape(-1).to(u.dtype)
    i32 = torch.int32
    x0 = torch.ceil(u - r - 0.5).clamp(0, width - 1).to(i32)
    x1 = torch.floor(u + r - 0.5).clamp(-1, width - 1).to(i32)
    y0 = torch.ceil(v - r - 0.5).clamp(0, height - 1).to(i32)
    y1 = torch.floor(v + r - 0.5).clamp(-1, height - 1).to(i32)
    span = (x1 - x0 + 1).clamp_min(0)
    count = torch.where(proj.radii.reshape(-1) > 0, span * (y1 - y0 + 1).clamp_min(0), torch.zeros_like(span))
    ids = count.nonzero().squeeze(1)
    ids = ids[torch.argsort(proj.depths.reshape(-1)[ids], stable=True)]  # nearest first
    reps = count[ids]
    total = int(reps.sum())
    ids32 = ids.to(i32)
    # per Gaussian, gathered once per pair: flat and local index, its image's first pixel, its box
    first_pair = torch.cumsum(reps, 0, dtype=i32) - reps
    per = torch.stack([ids32, ids32 % N, (ids32 // N) * (height * width), x0[ids], y0[ids], span[ids], first_pair], 1)
    per = torch.repeat_interleave(per, reps.long(), dim=0, output_size=total)
    offset = torch.arange(total, dtype=i32, device=u.device) - per[:, 6]
    dy = offset // per[:, 5]
    x, y = per[:, 3] + offset - dy * per[:, 5], per[:, 4] + dy
    pixel, order = torch.sort(per[:, 2] + y * width + x, stable=True)  # by pixel; within a pixel the depth order stays
    cols = torch.stack([per[:, 0], per[:, 1], x, y], 1).index_select(0, order)
    return PixelPairs(cols[:, 0], cols[:, 1], pixel, cols[:, 2], cols[:, 3])


def pair_alpha(proj: Projection, opacities: torch.Tensor, pairs: PixelPairs) -> torch.Tensor:
    """(M,) each pair's alpha: min(0.99, o·exp(power)), 0 where power > 0 or below 1/255."""
    # index_select, not x[idx]: its backward is an index_add, several times faster than index_put's
    uv = proj.means2d.reshape(-1, 2).index_select(0, pairs.gaussian)
    con = proj.conics.reshape(-1, 3).index_select(0, pairs.gaussian)
    dx, dy = pairs.x.to(uv.dtype) + 0.5 - uv[:, 0], pairs.y.to(uv.dtype) + 0.5 - uv[:, 1]
    power = -0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) - con[:, 1] * dx * dy
    alpha = (opacities.index_select(0, pairs.local) * torch.exp(power)).clamp(max=ALPHA_MAX)
    return torch.where((power <= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))


def transmittance_before(alpha: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log transmittance before each pair, log(1 - alpha)) along each pixel's list: a segmented
    cumulative product as a running sum of logs (float64: the sum runs across every pixel's list)."""
    log_through = torch.log1p(-alpha).double()
    running = torch.cumsum(log_through, 0) - log_through
    return running - running.index_select(0, first), log_through


def rasterize(proj: Projection, opacities: torch.Tensor, features: torch.Tensor, height: int,
              width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, H, W, C) composited features, (B, H, W, 1) alpha) of Gaussians with opacities (N,) and
    per-camera features (B, N, C), front to back per pixel.

    A first pass without gradients keeps the pairs that are composited: visible (alpha >= 1/255)
    and in front of where the pixel's transmittance falls below 1e-4 (3DGS's early termination);
    only those go through the differentiable pass (behind an opaque surface that is most of them)."""
    B, C = features.shape[0], features.shape[-1]
    pairs = pixel_pairs(proj, height, width)
    with torch.no_grad():
        alpha = pair_alpha(proj, opacities, pairs)
        log_before, log_through = transmittance_before(alpha, pairs.first())
        pairs = pairs.select((alpha > 0) & (log_before + log_through >= math.log(TRANSMITTANCE_MIN)))
    alpha = pair_alpha(proj, opacities, pairs)
    log_before, _ = transmittance_before(alpha, pairs.first())
    weights = alpha * torch.exp(log_before).to(alpha.dtype)
    rows = B * height * width
    image = torch.zeros(rows, C, dtype=features.dtype, device=features.device).index_add(
        0, pairs.pixel, weights[:, None] * features.reshape(-1, C).index_select(0, pairs.gaussian))
    acc = torch.zeros(rows, dtype=alpha.dtype, device=alpha.device).index_add(0, pairs.pixel, weights)
    return image.view(B, height, width, C), acc.view(B, height, width, 1)
