"""The Gaussians as a volume: density and albedo on a voxel grid, for point queries.

What the marching-cubes export, the field turntable's voxel cache and the DMTet's hand-over read
(representation.Volume). Each Gaussian becomes a volume density σ_i(x) = m_i N(x; μ_i, Σ_i + h²I):
its mass m_i = -log(1 - o_i) · 2π s_a s_b (s_a, s_b its two largest scales) makes a ray through
its centre along its shortest axis as opaque as its splat (optical depth -log(1 - o_i)); the
blur h (one voxel) keeps thin, flat Gaussians from falling between the grid's points, and keeps
the mass. DreamGaussian's local density query, on a grid: each Gaussian adds itself to the voxels
within 3 sigma, so the cost grows with the Gaussians, not with the grid times the Gaussians.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Iterator

import torch

from ..export.mesh import grid_lookup

MAX_PAIRS = 2**22  # (Gaussian, voxel) pairs per chunk


class GaussianVolume:
    @torch.no_grad()
    def __init__(self, means: torch.Tensor, covs: torch.Tensor, log_scales: torch.Tensor, opacities: torch.Tensor,
                 albedo: torch.Tensor, bound: float, resolution: int = 128):
        self.bound, self.resolution = float(bound), int(resolution)
        device = means.device
        r = self.resolution
        spacing = 2 * self.bound / (r - 1)
        blurred = covs.float() + (spacing**2) * torch.eye(3, device=device)
        inv, det = torch.linalg.inv(blurred), torch.linalg.det(blurred)
        s = log_scales.float().exp().sort(-1).values
        mass = -torch.log1p(-opacities.float().clamp(max=0.99)) * 2 * math.pi * s[:, 1] * s[:, 2]
        peak = mass / ((2 * math.pi) ** 1.5 * det.sqrt())  # (N,) density at the centre
        reach = torch.ceil(3 * blurred.diagonal(dim1=-2, dim2=-1).max(-1).values.sqrt() / spacing).long().clamp(1, r)
        density = torch.zeros(r**3, device=device)
        coloured = torch.zeros(r**3, 3, device=device)
        centre = torch.round((means.float() + self.bound) / spacing).long()
        for k in reach.unique().tolist():
            ids = (reach == k).nonzero().squeeze(1)
            ax = torch.arange(-k, k + 1, device=device)
            offsets = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).view(-1, 3)
            for chunk in ids.split(max(1, MAX_PAIRS // offsets.shape[0])):
                cells = centre[chunk, None] + offsets[None]  # (n, K, 3)
                inside = ((cells >= 0) & (cells < r)).all(-1)
                d = cells.float() * spacing - self.bound - means[chunk, None].float()
                q = torch.einsum("nki,nij,nkj->nk", d, inv[chunk], d)
                value = peak[chunk, None] * torch.exp(-0.5 * q) * inside
                flat = (cells[..., 0] * r + cells[..., 1]) * r + cells[..., 2]
                flat = torch.where(inside, flat, torch.zeros_like(flat)).view(-1)
                density.index_add_(0, flat, value.view(-1))
                coloured.index_add_(0, flat, (value[..., None] * albedo[chunk, None].float()).view(-1, 3))
        self.coloured = torch.cat([density[None], coloured.T]).reshape(1, 4, r, r, r)  # σ and σ·albedo
        self.grid = self.coloured[:, :1]  # σ alone (a view)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) volume density at world points (N, 3) (trilinear on the grid; 0 outside the box)."""
        return grid_lookup(self.grid, x.to(self.grid), self.bound)[:, 0]

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) density-weighted albedo of the Gaussians at world points (N, 3): the interpolated
        σ·albedo over the interpolated σ, so empty voxels never grey a surface's colour (grey where
        there is nothing at all)."""
        both = grid_lookup(self.coloured, x.to(self.grid), self.bound)
        tiny = 1e-6
        return ((both[:, 1:] + 0.5 * tiny) / (both[:, :1] + tiny)).clamp(0.0, 1.0)

    def __call__(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(density=self.density(x), albedo=self.albedo(x))

    def parameters(self) -> Iterator[torch.Tensor]:  # where the queries run (export.mesh.field_device)
        yield self.grid

    def eval(self) -> "GaussianVolume":
        return self
