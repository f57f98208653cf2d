"""The parameters of a set of 3D Gaussians and the geometry read from them.

Each Gaussian i has a mean μ_i, log-scales, a unit quaternion q_i (w, x, y, z, gsplat's order),
an opacity logit and albedo logits: Σ_i = R(q_i) diag(exp(2 log s_i)) R(q_i)^T. Its normal for
shading is its shortest axis (a flattened Gaussian is a surfel), turned toward the viewer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..utils import random

FIELDS = ("means", "log_scales", "quats", "opacity_logits", "albedo_logits")


@dataclass
class GaussianParams:
    means: torch.Tensor  # (N, 3) world
    log_scales: torch.Tensor  # (N, 3)
    quats: torch.Tensor  # (N, 4) w, x, y, z (normalized where used)
    opacity_logits: torch.Tensor  # (N,)
    albedo_logits: torch.Tensor  # (N, 3)

    @property
    def count(self) -> int:
        return self.means.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in FIELDS}


def random_ball(n: int, radius: float, scale: float, opacity: float, albedo: float, generator: torch.Generator,
                device: torch.device | str = "cpu") -> GaussianParams:
    """n isotropic Gaussians uniform in a ball (DreamGaussian's start), all alike but their place."""
    direction = F.normalize(random.randn((n, 3), generator), dim=-1)
    r = radius * random.rand((n, 1), generator).pow(1.0 / 3.0)
    means = (direction * r).to(device)
    logit = lambda p: math.log(p / (1.0 - p))  # noqa: E731
    return GaussianParams(
        means=means,
        log_scales=torch.full((n, 3), math.log(scale), device=device),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0], device=device).repeat(n, 1),
        opacity_logits=torch.full((n,), logit(opacity), device=device),
        albedo_logits=torch.full((n, 3), logit(albedo), device=device),
    )


def nearest_neighbour_spacing(points: torch.Tensor, chunk: int = 2048) -> float:
    """The median distance (world units) from each of `points` (N, 3) to its nearest other one."""
    nearest = [torch.cdist(part, points).topk(2, largest=False).values[:, 1] for part in points.split(chunk)]
    return float(torch.cat(nearest).median())


def surfels(points: torch.Tensor, normals: torch.Tensor, albedo: torch.Tensor, opacity: float = 0.9,
            tangent_spacings: float = 2.5, thickness: float = 0.15) -> GaussianParams:
    """Flat Gaussians on a surface: one at each of `points` (N, 3), its shortest axis along the
    unit normal (N, 3), `tangent_spacings` nearest-neighbour spacings wide (with points spread
    evenly, about 1.25 sqrt(area / N): at 0.7 spacings the splats left holes and the true cube's
    export had genus 4; at 1.5 and 2.5 it was 0.0057 / 10.0° and 0.0052 / 8.8° from the truth),
    `thickness` times as thin, with the albedo (N, 3) given (clamped to [0.02, 0.98])."""
    n = points.shape[0]
    z = normals.float()
    quats = torch.stack([1 + z[:, 2], -z[:, 1], z[:, 0], torch.zeros_like(z[:, 0])], -1)  # turns +z onto the normal
    quats = torch.where((quats[:, :1] < 1e-4), quats.new_tensor([0.0, 1.0, 0.0, 0.0]), quats)  # a normal along -z: half a turn about x
    width = tangent_spacings * nearest_neighbour_spacing(points.float())
    scales = points.new_tensor([width, width, thickness * width]).float().log().expand(n, 3)
    logit = math.log(opacity / (1.0 - opacity))
    return GaussianParams(means=points.float(), log_scales=scales.clone(), quats=F.normalize(quats, dim=-1),
                          opacity_logits=torch.full((n,), logit, device=points.device),
                          albedo_logits=torch.logit(albedo.float().clamp(0.02, 0.98)))


def quat_to_rotation(quats: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotation matrices of quaternions (N, 4) w, x, y, z (any norm)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).view(-1, 3, 3)


def covariances(log_scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) world covariances R S S^T R^T."""
    m = quat_to_rotation(quats) * log_scales.exp().unsqueeze(-2)  # R S: column k scaled by s_k
    return m @ m.transpose(-1, -2)


def shortest_axes(log_scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """(N, 3) unit direction of each Gaussian's shortest axis (sign arbitrary)."""
    rot = quat_to_rotation(quats)
    k = log_scales.argmin(-1)  # (N,)
    return rot.gather(2, k.view(-1, 1, 1).expand(-1, 3, 1)).squeeze(-1)
