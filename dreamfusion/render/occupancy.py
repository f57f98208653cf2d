"""Empty-space skipping: a binary occupancy grid over the box, refreshed from the field.

The grid keeps an exponential moving maximum of the density in each cell (decay each update, then
max with fresh samples at jittered cell positions) and marks cells whose density could make a
visible sample (alpha > `alpha_threshold` at the render step). Like nerfacc's OccGridEstimator,
the threshold is capped by the mean density so a field that is still faint is not pruned away.
The renderer uses it twice: to tighten each ray's [near, far] to the occupied span, and to skip
field evaluations at samples in empty cells.

`NerfaccOccupancy` wraps nerfacc's OccGridEstimator for CUDA, where its kernels do the same job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, key_of, require_positive

DensityFn = Callable[[torch.Tensor], torch.Tensor]  # (N, 3) world points → (N,) density


@dataclass
class OccupancyConfig:
    enabled: bool = True
    resolution: int = 32
    update_every: int = 16  # optimization steps between refreshes
    decay: float = 0.95
    alpha_threshold: float = 0.01
    dilate: int = 1  # cells of margin around occupied cells, so thin surfaces near cell borders survive
    warmup_steps: int = 256  # before this step every cell is re-sampled at each refresh

    def validate(self, prefix: str = "") -> None:
        require_positive(prefix, "resolution", self.resolution)
        require_positive(prefix, "update_every", self.update_every)
        if not 0.0 <= self.decay <= 1.0:
            raise ConfigError(f"{key_of(prefix, 'decay')} must be in [0, 1], got {self.decay}")
        if not 0.0 < self.alpha_threshold < 1.0:
            raise ConfigError(f"{key_of(prefix, 'alpha_threshold')} must be in (0, 1), got {self.alpha_threshold}")
        if self.dilate < 0:
            raise ConfigError(f"{key_of(prefix, 'dilate')} must be >= 0, got {self.dilate}")


class OccupancyGrid(nn.Module):
    """Pure-PyTorch occupancy grid over [-bound, bound]^3 (any device)."""

    def __init__(self, cfg: OccupancyConfig, bound: float, render_step: float):
        super().__init__()
        self.cfg, self.bound, self.render_step = cfg, bound, render_step
        r = cfg.resolution
        self.register_buffer("density", torch.zeros(r, r, r))
        self.register_buffer("occupied", torch.ones(r, r, r, dtype=torch.bool))  # all on until the first update
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def cell_centers(self) -> torch.Tensor:
        r = self.cfg.resolution
        ax = (torch.arange(r, device=self.density.device, dtype=torch.float32) + 0.5) / r
        grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1).view(-1, 3)
        return (grid * 2 - 1) * self.bound

    @torch.no_grad()
    def update(self, density_fn: DensityFn, step: int, generator: torch.Generator | None = None, chunk: int = 65536) -> None:
        """Refresh from the field. Before warm-up every cell is sampled; after it a random quarter plus the occupied ones."""
        cfg, r = self.cfg, self.cfg.resolution
        n_cells = r**3
        if step < cfg.warmup_steps:
            cells = torch.arange(n_cells, device=self.density.device)
        else:
            occupied = self.occupied.view(-1).nonzero().squeeze(-1)
            rand = torch.randint(0, n_cells, (n_cells // 4,), generator=generator, device="cpu").to(self.density.device)
            cells = torch.unique(torch.cat([occupied, rand]))
        centers = self.cell_centers()[cells]
        cell = 2 * self.bound / r
        jitter = (torch.rand(centers.shape, generator=generator, device="cpu").to(centers) - 0.5) * cell
        pts = (centers + jitter).clamp(-self.bound, self.bound)
        fresh = torch.cat([density_fn(p) for p in pts.split(chunk)])
        flat = self.density.view(-1)
        flat.mul_(cfg.decay)
        flat[cells] = torch.maximum(flat[cells], fresh.float().nan_to_num(0.0))
        threshold = min(cfg.alpha_threshold / self.render_step, flat.mean().item())
        occ = (self.density > threshold).float()
        if cfg.dilate > 0:
            k = 2 * cfg.dilate + 1
            occ = F.max_pool3d(occ[None, None], kernel_size=k, stride=1, padding=cfg.dilate)[0, 0]
        self.occupied.copy_(occ > 0)
        self.updates += 1

    def query(self, points: torch.Tensor) -> torch.Tensor:
        """Occupancy (N,) bool of world points (N, 3); points outside the box are empty."""
        r = self.cfg.resolution
        u = (points / self.bound * 0.5 + 0.5) * r
        inside = ((u >= 0) & (u < r)).all(-1)
        ijk = u.long().clamp(0, r - 1)
        occ = self.occupied[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        return occ & inside

    def occupied_fraction(self) -> float:
        return self.occupied.float().mean().item()


class NerfaccOccupancy(nn.Module):
    """nerfacc's OccGridEstimator (CUDA kernels; imported lazily)."""

    def __init__(self, cfg: OccupancyConfig, bound: float, render_step: float):
        super().__init__()
        from nerfacc import OccGridEstimator

        self.cfg, self.bound, self.render_step = cfg, bound, render_step
        aabb = torch.tensor([-bound, -bound, -bound, bound, bound, bound], dtype=torch.float32)
        self.estimator = OccGridEstimator(roi_aabb=aabb, resolution=cfg.resolution, levels=1)

    @torch.no_grad()
    def update(self, density_fn: DensityFn, step: int, generator: torch.Generator | None = None, chunk: int = 65536) -> None:
        self.estimator.update_every_n_steps(
            step=step,
            occ_eval_fn=lambda x: density_fn(x) * self.render_step,
            occ_thre=self.cfg.alpha_threshold,
            ema_decay=self.cfg.decay,
            warmup_steps=self.cfg.warmup_steps,
            n=1,  # the caller already decides when to refresh
        )

    def occupied_fraction(self) -> float:
        return self.estimator.binaries.float().mean().item()
