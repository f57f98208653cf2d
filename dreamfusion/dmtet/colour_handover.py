"""The colour hand-over: the coarse albedo, brought back to where the fine stage can still move it.

The coarse NeRF's albedo is `sigmoid(head(h))`. Score distillation saturates it (a red cube's
green and blue near 0.007, logits near -5), where the sigmoid's slope is under 1% of its peak.
Copied as it is, the fine stage can move only the unsaturated channel, and the prior explains a
red with no green or blue as a dark red: the red channel falls (0.92 -> 0.31, maroon, ΔE 57).
Started from the same colour with its channels inside [0.05, 0.95], the fine stage brings it to
the palette instead (ΔE 10.9 -> 0.8 in 300 steps; docs/toy-world.md, scripts/fixed_point.py).

So the hand-over refits the albedo head, in closed form, so that on the starting surface it gives
the coarse logits clamped to that range: a ridge regression of the clamped logits on the features
the head reads, sampled at the surface and half a cell around it. Colours already inside the range are
kept; the texture's pattern (a mark) stays, since the features are the coarse field's own.
"""
from __future__ import annotations

import math

import torch

from ..utils import random


@torch.no_grad()
def clamp_albedo_range(colour: torch.nn.Module, points: torch.Tensor, low: float, high: float, ridge: float = 1e-3,
                       target: torch.Tensor | None = None) -> float:
    """Refit `colour.albedo_head` (a Linear on `colour.albedo_features`) so that at `points` (N, 3) it gives
    the current logits, or those of the `target` albedo (N, 3) where given, clamped to
    [logit(low), logit(high)]. Returns the largest albedo change at the points (0 when nothing
    changed)."""
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"the albedo range must satisfy 0 < low < high < 1, got [{low}, {high}]")
    head = colour.albedo_head
    h = colour.albedo_features(points).float()  # (N, H)
    logits = head(h)  # (N, 3)
    wanted = logits if target is None else torch.logit(target.float().clamp(1e-6, 1 - 1e-6)).to(logits.dtype)
    wanted = wanted.clamp(math.log(low / (1 - low)), math.log(high / (1 - high)))
    if torch.equal(wanted, logits):
        return 0.0
    a = torch.cat([h, torch.ones_like(h[:, :1])], 1)  # (N, H + 1): features and the bias
    gram = a.T @ a + ridge * a.shape[0] * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    solution = torch.linalg.solve(gram, a.T @ wanted)  # (H + 1, 3)
    head.weight.copy_(solution[:-1].T.to(head.weight.dtype))
    head.bias.copy_(solution[-1].to(head.bias.dtype))
    return float((torch.sigmoid(head(h)) - torch.sigmoid(logits)).abs().max())


def surface_points(vertices: torch.Tensor, spread: float, copies: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """The surface's vertices (V, 3) and `copies` jittered copies within `spread` of them: where the
    fine stage reads its texture, and where it will move the surface."""
    jitter = [(random.rand(vertices.shape, generator, vertices.device) * 2 - 1) * spread for _ in range(copies)]
    return torch.cat([vertices, *(vertices + j for j in jitter)])


def fit_albedo(colour: torch.nn.Module, points: torch.Tensor, target: torch.Tensor, albedo_range: tuple[float, float],
               steps: int = 200, lr: float = 2e-2, max_points: int = 8192, seed: int = 0) -> float:
    """Fit a fresh colour field's albedo at `points` (N, 3) to `target` (N, 3), clamped to
    `albedo_range` (as the copy's refit): the hand-over from a coarse stage whose colour lives in
    no field (3D Gaussians). Full-batch Adam on at most `max_points` of the points (a seeded draw;
    a colour field is smooth, and all 40,000 cost 10 s); returns the mean squared error on all."""
    wanted = target.detach().float().clamp(*albedo_range)
    pick = random.rand((points.shape[0],), torch.Generator().manual_seed(seed)).argsort()[:max_points].to(points.device)
    fit_points, fit_wanted = points[pick], wanted[pick]
    params = [p for p in colour.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), eps=1e-15)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (colour.albedo(fit_points).float() - fit_wanted).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((colour.albedo(points).float() - wanted).square().mean())
