"""Shading of surface samples: albedo, lambertian (ambient + diffuse) and textureless.

DreamFusion: a point light per camera, its direction drawn around the camera position; ambient-only
warm-up, then ambient 0.1 + diffuse 0.9. Textureless replaces the albedo with white so the
guidance must explain the image by geometry alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..config import key_of, require_range, ConfigError
from ..utils import random

ShadingMode = Literal["albedo", "lambertian", "textureless"]
SHADING_MODES: tuple[str, ...] = ("albedo", "lambertian", "textureless")


@dataclass
class LightConfig:
    position_perturb: float = 1.0  # std of the Gaussian around the camera direction
    distance_range: tuple[float, float] = (0.8, 1.5)
    ambient: float = 0.1
    diffuse: float = 0.9

    def validate(self, prefix: str = "") -> None:
        require_range(prefix, "distance_range", self.distance_range, 1e-6, float("inf"))
        for name in ("position_perturb", "ambient", "diffuse"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{key_of(prefix, name)} must be >= 0, got {getattr(self, name)}")


def sample_lights(cfg: LightConfig, camera_positions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Point-light positions (B, 3): direction ~ N(camera direction, perturb^2 I), distance ~ U(range)."""
    b = camera_positions.shape[0]
    noise = random.randn((b, 3), generator, camera_positions.device) * cfg.position_perturb
    direction = F.normalize(F.normalize(camera_positions, dim=-1) + noise, dim=-1)
    lo, hi = cfg.distance_range
    dist = lo + (hi - lo) * random.rand((b, 1), generator, camera_positions.device)
    return direction * dist


def shade(
    mode: str,
    albedo: torch.Tensor,  # (N, 3)
    normal: torch.Tensor | None,  # (N, 3) unit
    points: torch.Tensor,  # (N, 3)
    light_position: torch.Tensor,  # (N, 3) the light of each sample's camera
    ambient: float,
    diffuse: float,
) -> torch.Tensor:
    """Shaded colour (N, 3) of each sample."""
    if mode == "albedo":
        return albedo
    if mode not in SHADING_MODES:
        raise ConfigError(f"shading must be one of {', '.join(SHADING_MODES)}, got {mode!r}")
    if normal is None:
        raise ValueError(f"shading {mode!r} needs normals")
    light_dir = F.normalize(light_position - points, dim=-1)
    lambert = (normal * light_dir).sum(-1, keepdim=True).clamp_min(0.0)
    intensity = ambient + diffuse * lambert
    base = albedo if mode == "lambertian" else torch.ones_like(albedo)
    return (base * intensity).clamp(0.0, 1.0)
