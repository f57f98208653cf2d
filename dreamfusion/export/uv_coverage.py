"""Which texel centres each UV triangle covers: the texture baker's 2-D coverage (no depth, no cameras).

Rendering a mesh from a camera is `render.rasterizer`'s job (the one rasterizer, differentiable
and batched); baking a texture only needs each triangle's bounding box expanded into candidate
texels, in batches so memory stays bounded, and one winner per texel."""
from __future__ import annotations

from typing import Iterator

import torch


def covering_pixels(tri: torch.Tensor, height: int, width: int, reach: float = 0.0, budget: int = 2_000_000) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches of (face index, column, row) for every pixel centre in each triangle's bounding box
    grown by `reach`; tri (F, 3, 2) holds (column, row) positions where pixel (r, c) has centre (c, r)."""
    lo = torch.floor(tri.amin(1) - reach)
    hi = torch.ceil(tri.amax(1) + reach)
    lo = torch.stack([lo[:, 0].clamp(0, width - 1), lo[:, 1].clamp(0, height - 1)], 1).long()
    hi_c = torch.stack([hi[:, 0].clamp(-1, width - 1), hi[:, 1].clamp(-1, height - 1)], 1).long()
    wh = (hi_c - lo + 1).clamp_min(0)
    counts = wh[:, 0] * wh[:, 1]
    ends = torch.cumsum(counts, 0)
    f0, n = 0, tri.shape[0]
    while f0 < n:
        base = int(ends[f0] - counts[f0])
        f1 = int(torch.searchsorted(ends, torch.tensor(base + budget, dtype=ends.dtype), right=True).clamp(min=f0 + 1, max=n))
        c = counts[f0:f1]
        fid = torch.repeat_interleave(torch.arange(f0, f1, device=tri.device), c)
        local = torch.arange(fid.shape[0], device=tri.device) - torch.repeat_interleave(ends[f0:f1] - c - base, c)
        w = wh[fid, 0].clamp_min(1)
        yield fid, lo[fid, 0] + local % w, lo[fid, 1] + local // w
        f0 = f1


def unique_first(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique values of x and the index of one occurrence of each."""
    order = torch.argsort(x, stable=True)
    xs = x[order]
    head = torch.ones_like(xs, dtype=torch.bool)
    head[1:] = xs[1:] != xs[:-1]
    return xs[head], order[head]
