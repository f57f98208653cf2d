"""Analytic fields with NeRFField's interface, for tests whose right answer is known."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from dreamfusion.field.nerf import FieldOutput


class AnalyticField(nn.Module):
    """density_fn(x) → (N,), albedo_fn(x) → (N, 3); analytic normals by autograd."""

    def __init__(self, density_fn, albedo_fn=None, bound: float = 1.0):
        super().__init__()
        self.density_fn = density_fn
        self.albedo_fn = albedo_fn or (lambda x: torch.full_like(x, 0.5))
        self.cfg = SimpleNamespace(bound=bound, normal_type="analytic")
        self._device_anchor = nn.Parameter(torch.zeros(1))  # gives the renderer a device

    def density(self, x):
        return self.density_fn(x)

    def forward(self, x, normals=None):
        normal = None
        if normals is not None:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                d = self.density_fn(xg)
                grad = torch.autograd.grad(d.sum(), xg)[0] if d.requires_grad else torch.zeros_like(x)
            normal = -F.normalize(grad, dim=-1)
        return FieldOutput(self.density_fn(x), self.albedo_fn(x), normal, normal)


def slab(sigma: float, half_width: float):
    return lambda x: torch.where(x[:, 0].abs() < half_width, torch.full_like(x[:, 0], sigma), torch.zeros_like(x[:, 0]))


def soft_sphere(radius: float, sharpness: float = 200.0, peak: float = 500.0):
    return lambda x: peak * torch.sigmoid(sharpness * (radius - x.norm(dim=-1)))
