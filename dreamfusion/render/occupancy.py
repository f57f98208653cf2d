"""Empty-space skipping: a binary occupancy grid over the box, refreshed from the field.

The grid keeps an exponential moving maximum of the density in each cell (decay each update, then
max with fresh samples at jittered cell positions) and marks cells whose density could make a
visible sample (alpha > `alpha_threshold` at the render step). Like nerfacc's OccGridEstimator,
the threshold is capped by the mean density so a field that is still faint is not pruned away.
The renderer uses it twice: to tighten each ray's [near, far] to the occupied span, and to skip
field evaluations at samples in empty cells.

`NerfaccOccupancy` wraps nerfacc's OccGridEstimator for CUDA, where its kernels do the same job.
Both save the same state (`density` (R, R, R), `occupied` (R, R, R) bool, `updates`), so a
checkpoint trained with nerfacc on a GPU renders with the PyTorch grid on a CPU and back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, key_of, require_positive
from ..utils import random

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
        self.ready = False  # updated at least once (a Python flag: reading `updates` would sync a GPU)
        self.register_load_state_dict_post_hook(_mark_ready)

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
            rand = random.randint(0, n_cells, (n_cells // 4,), generator, self.density.device)
            cells = torch.unique(torch.cat([occupied, rand]))
        centers = self.cell_centers()[cells]
        cell = 2 * self.bound / r
        jitter = (random.rand(centers.shape, generator, centers.device, centers.dtype) - 0.5) * cell
        pts = (centers + jitter).clamp(-self.bound, self.bound)
        fresh = torch.cat([density_fn(p) for p in pts.split(chunk)])
        flat = self.density.view(-1)
        flat.mul_(cfg.decay)
        flat[cells] = torch.maximum(flat[cells], fresh.float().nan_to_num(0.0))
        threshold = flat.mean().clamp(max=cfg.alpha_threshold / self.render_step)  # a tensor: no host sync
        occ = (self.density > threshold).float()
        if cfg.dilate > 0:
            k = 2 * cfg.dilate + 1
            occ = F.max_pool3d(occ[None, None], kernel_size=k, stride=1, padding=cfg.dilate)[0, 0]
        self.occupied.copy_(occ > 0)
        self.updates += 1
        self.ready = True

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


def _mark_ready(module: nn.Module, _incompatible) -> None:
    module.ready = bool(module.updates.item() > 0)


class NerfaccOccupancy(nn.Module):
    """nerfacc's OccGridEstimator (CUDA kernels; imported lazily), saved in OccupancyGrid's layout."""

    def __init__(self, cfg: OccupancyConfig, bound: float, render_step: float):
        super().__init__()
        from nerfacc import OccGridEstimator

        self.cfg, self.bound, self.render_step = cfg, bound, render_step
        aabb = torch.tensor([-bound, -bound, -bound, bound, bound, bound], dtype=torch.float32)
        self.estimator = OccGridEstimator(roi_aabb=aabb, resolution=cfg.resolution, levels=1)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_state_dict_post_hook(_nerfacc_to_canonical)
        self.register_load_state_dict_pre_hook(_canonical_to_nerfacc)

    @torch.no_grad()
    def update(self, density_fn: DensityFn, step: int, generator: torch.Generator | None = None, chunk: int = 65536) -> None:
        training = self.estimator.training
        self.estimator.train()  # nerfacc refuses updates in eval mode; a render for a demo may still want one
        try:
            self.estimator.update_every_n_steps(
                step=step,
                occ_eval_fn=lambda x: density_fn(x) * self.render_step,
                occ_thre=self.cfg.alpha_threshold,
                ema_decay=self.cfg.decay,
                warmup_steps=self.cfg.warmup_steps,
                n=1,  # the caller already decides when to refresh
            )
        finally:
            self.estimator.train(training)
        self.updates += 1

    def occupied_fraction(self) -> float:
        return self.estimator.binaries.float().mean().item()


# nerfacc keeps alpha (density x render step) per cell in `occs` and the mask in `binaries` (levels, R, R, R),
# cells in the same x-major order as OccupancyGrid; `resolution` and `aabbs` follow from the config.
def _nerfacc_to_canonical(module: NerfaccOccupancy, state: dict, prefix: str, _meta) -> None:
    est, r = prefix + "estimator.", module.cfg.resolution
    occs = state.pop(est + "occs")
    state[prefix + "density"] = (occs / module.render_step).reshape(r, r, r).float()
    state[prefix + "occupied"] = state.pop(est + "binaries").reshape(r, r, r)
    for key in ("resolution", "aabbs"):
        state.pop(est + key, None)


def _canonical_to_nerfacc(module: NerfaccOccupancy, state: dict, prefix: str, *_args) -> None:
    est = module.estimator
    if prefix + "density" in state:
        state[prefix + "estimator.occs"] = (state.pop(prefix + "density").reshape(-1) * module.render_step).to(est.occs.dtype)
    if prefix + "occupied" in state:
        state[prefix + "estimator.binaries"] = state.pop(prefix + "occupied").reshape(est.binaries.shape)
    state.setdefault(prefix + "estimator.resolution", est.resolution)
    state.setdefault(prefix + "estimator.aabbs", est.aabbs)
