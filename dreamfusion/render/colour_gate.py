"""Which renders of a batch teach colour: in the others the albedo enters as a constant.

A lit render's shading, or a large SDS timestep at which the prior cannot tell an albedo render
from a lit one, would teach the colour something else than the object's albedo; those renders
still shape the geometry. The gate is one flag for the whole batch or one per image.
"""
from __future__ import annotations

import torch

AlbedoGrad = bool | torch.Tensor  # the whole batch, or a (B,) bool tensor: per image


def scored_below(timesteps: torch.Tensor, t_max: float, num_train_timesteps: int) -> torch.Tensor:
    """(B,) bool: which renders, scored at `timesteps` (B,) long, lie at or below the fraction
    `t_max` of the schedule and so teach colour (train.colour_t_max)."""
    return timesteps.float() <= t_max * num_train_timesteps


def per_row(albedo_grad: AlbedoGrad, rows_per_image: int) -> AlbedoGrad:
    """A per-image gate (B,) repeated for each of an image's rows (pixels or rays): (B * rows,)."""
    if isinstance(albedo_grad, bool):
        return albedo_grad
    return albedo_grad.reshape(-1, 1).expand(-1, rows_per_image).reshape(-1)


def gate_albedo(albedo: torch.Tensor, albedo_grad: AlbedoGrad, row: torch.Tensor | None = None) -> torch.Tensor:
    """albedo (N, 3) with its gradient kept where the gate is true; `row` (N,) long: each entry's
    index into a per-row gate (a sample's ray, a fragment's pixel)."""
    if isinstance(albedo_grad, bool):
        return albedo if albedo_grad else albedo.detach()
    keep = albedo_grad.to(albedo.device)
    keep = keep[row] if row is not None else keep
    return torch.where(keep.unsqueeze(-1), albedo, albedo.detach())
