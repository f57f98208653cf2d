"""The colour a render of a soft field shows at a point of its surface mesh.

A mesh of a field trained by score distillation sits at the skin of its fog (render.volume's
SURFACE_OPTICAL_DEPTH), where the albedo network was hardly ever read: a head-on render composites
the albedo over the first tenth of the object behind the skin, weighted by the density. Read at the
skin itself, the coarse meshes of the toy suite's blue sphere and green torus came out ΔE 9.1 and
5.4 from the palette; the composite gives 1.6 and 2.3. So meshes take the composite: a short ray
through each surface point along the inward normal (the density's own gradient over a cell or
so), rendered like any other ray.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .volume import compositing_weights


Fn = Callable[[torch.Tensor], torch.Tensor]  # world points (N, 3) -> density (N,) or (N, 1) / albedo (N, 3)


def density_normals(density: Fn, points: torch.Tensor, step: float) -> torch.Tensor:
    """Outward unit normals (N, 3): minus the density's central-difference gradient over `step`
    (a few cells: smoother than the hash grid's analytic normals, which speckle)."""
    offsets = torch.eye(3, dtype=points.dtype, device=points.device) * step
    grad = torch.stack([density(points + o).reshape(-1) - density(points - o).reshape(-1) for o in offsets], -1)
    return -F.normalize(grad.float(), dim=-1)


@torch.no_grad()
def rendered_albedo(density: Fn, albedo: Fn, points: torch.Tensor, normals: torch.Tensor | None = None,
                    outside: float = 0.03, inside: float = 0.2, samples: int = 8, normal_step: float = 0.03,
                    chunk: int = 16384, min_weight: float = 1e-3) -> torch.Tensor:
    """Albedo (N, 3) a head-on render composites at surface points (N, 3).

    Each ray starts `outside` beyond the point, along the outward normal (given, e.g. a mesh's
    interpolated vertex normals, or else from the density), and runs `inside` into the object with
    `samples` samples; where it stays nearly transparent (opacity < 0.05), the albedo at the point
    itself is kept. The albedo is read only at samples of weight >= `min_weight` (their total is
    renormalised): behind a sharp skin that is two or three of the eight."""
    out = []
    t = torch.linspace(-outside, inside, samples, dtype=points.dtype, device=points.device)  # (S,) depth behind a point
    for start in range(0, points.shape[0], chunk):
        p = points[start : start + chunk]
        n = normals[start : start + chunk] if normals is not None else density_normals(density, p, normal_step)
        x = p[:, None, :] - t[None, :, None] * n[:, None, :]  # (R, S, 3)
        sigma = density(x.reshape(-1, 3)).reshape(p.shape[0], samples).float()
        w = compositing_weights(sigma, torch.full_like(sigma, (outside + inside) / (samples - 1)))
        w = torch.where(w >= min_weight, w, torch.zeros_like(w))
        opacity = w.sum(-1, keepdim=True)
        read = w > 0  # (R, S)
        colour = torch.zeros(*w.shape, 3, dtype=torch.float32, device=w.device)
        if bool(read.any()):
            colour[read] = albedo(x[read]).float()
        composite = (w[..., None] * colour).sum(1) / opacity.clamp_min(1e-6)
        clear = opacity[:, 0] <= 0.05  # nothing to composite: the albedo at the point itself
        if bool(clear.any()):
            composite[clear] = albedo(p[clear]).float()
        out.append(composite)
    return torch.cat(out) if out else torch.zeros(0, 3, device=points.device)
