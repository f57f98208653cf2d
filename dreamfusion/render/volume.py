"""Volume compositing on dense [rays, samples] tensors.

alpha_i = 1 - exp(-sigma_i * delta_i); T_i = prod_{j<i} (1 - alpha_j); w_i = alpha_i * T_i.
Opacity = sum w, depth = sum w t (expected ray distance, not normalised: a background pixel has
depth 0), and any per-sample quantity composites as sum w q.
"""
from __future__ import annotations

import torch

from ..utils import random

# Where a soft field's surface is placed (meshes, the fine stage's start): the point where a head-on
# ray's optical depth reaches this, near its skin rather than at the median of its weights (ln 2).
# export.mesh.auto_level says why.
SURFACE_OPTICAL_DEPTH = 0.1


def ray_box_intersection(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry/exit distances (R,) of rays (R, 3) with the box [-bound, bound]^3, and a hit mask (R,)."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) * inv
    t1 = (bound - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    return near, torch.where(hit, far, near), hit


def stratified_samples(near: torch.Tensor, far: torch.Tensor, n_samples: int, jitter: bool, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample distances (R, S) (one per equal bin, jittered inside it when training) and bin widths (R, S)."""
    bins = torch.arange(n_samples, device=near.device, dtype=near.dtype)
    if jitter:
        u = random.rand((near.shape[0], n_samples), generator, near.device, near.dtype)
    else:
        u = torch.full((near.shape[0], n_samples), 0.5, device=near.device, dtype=near.dtype)
    step = ((far - near) / n_samples).unsqueeze(-1)  # (R, 1)
    t = near.unsqueeze(-1) + (bins + u) * step
    return t, step.expand_as(t)


def compositing_weights(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Weights (R, S) for densities (R, S) over bins of width deltas (R, S)."""
    tau = sigma * deltas
    # Exclusive cumulative sum in log space is stabler than a cumulative product of (1 - alpha).
    transmittance = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], dim=-1), dim=-1))
    alpha = 1.0 - torch.exp(-tau)
    return alpha * transmittance


def composite(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_i w_i v_i: weights (R, S), values (R, S, C) → (R, C)."""
    return torch.einsum("rs,rsc->rc", weights, values)
