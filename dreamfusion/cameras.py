"""Cameras: random sampling as in DreamFusion, look-at frames, rays, view labels, turntables.

Conventions (docs/conventions.md): world +z up; azimuth 0° puts the camera on +x looking at the origin,
azimuth grows counter-clockwise seen from above (+x toward +y); elevation is the angle above the
xy-plane. Camera-to-world matrices are OpenGL style: the camera looks down its -z, +y up, +x right.
Angles are stored in degrees, azimuth wrapped to [-180, 180).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ConfigError, key_of, require_range
from .utils import random

VIEW_LABELS = ("front", "side", "back", "overhead")


@dataclass
class CameraConfig:
    """Ranges of the random camera distribution used during optimization (degrees, world units)."""

    elevation_range: tuple[float, float] = (-10.0, 85.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    distance_range: tuple[float, float] = (1.5, 2.0)
    fovy_range: tuple[float, float] = (40.0, 70.0)
    # Random offsets that keep the optimizer from over-fitting to one exact camera placement.
    center_jitter: float = 0.0  # std of the look-at point offset
    up_jitter: float = 0.0  # std of the up-vector perturbation
    # Draw elevation uniformly on the sphere instead of uniformly in angle (uniform-in-angle,
    # DreamFusion's choice, over-samples the pole).
    uniform_sphere: bool = False

    def validate(self, prefix: str = "") -> None:
        require_range(prefix, "elevation_range", self.elevation_range, -90.0, 90.0)
        require_range(prefix, "azimuth_range", self.azimuth_range, -360.0, 360.0)
        require_range(prefix, "distance_range", self.distance_range, 1e-6, math.inf)
        require_range(prefix, "fovy_range", self.fovy_range, 1e-3, 179.0)
        if self.center_jitter < 0 or self.up_jitter < 0:
            raise ConfigError(f"{key_of(prefix, 'center_jitter')}/up_jitter must be >= 0")


@dataclass
class Cameras:
    """A batch of B pinhole cameras."""

    c2w: torch.Tensor  # (B, 4, 4) camera-to-world, OpenGL axes
    fovy: torch.Tensor  # (B,) degrees
    elevation: torch.Tensor  # (B,) degrees
    azimuth: torch.Tensor  # (B,) degrees in [-180, 180)
    distance: torch.Tensor  # (B,)

    @property
    def batch_size(self) -> int:
        return self.c2w.shape[0]

    @property
    def position(self) -> torch.Tensor:  # (B, 3)
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(*(t.to(device) for t in (self.c2w, self.fovy, self.elevation, self.azimuth, self.distance)))

    def __getitem__(self, index) -> "Cameras":
        pick = lambda t: t[index] if t[index].dim() == t.dim() else t[index].unsqueeze(0)  # noqa: E731
        return Cameras(*(pick(t) for t in (self.c2w, self.fovy, self.elevation, self.azimuth, self.distance)))

    def view_labels(self) -> list[str]:
        return [VIEW_LABELS[i] for i in view_label_indices(self.elevation, self.azimuth).tolist()]


def wrap_azimuth(azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Wrap degrees into [-180, 180)."""
    return torch.remainder(azimuth_deg + 180.0, 360.0) - 180.0


def view_label_indices(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
    """DreamFusion's view labels as indices into VIEW_LABELS.

    elevation > 60° → overhead; else |azimuth| < 45° → front, > 135° → back, otherwise side.
    """
    az = wrap_azimuth(azimuth_deg).abs()
    label = torch.full_like(az, 1, dtype=torch.long)  # side
    label = torch.where(az < 45.0, torch.zeros_like(label), label)
    label = torch.where(az > 135.0, torch.full_like(label, 2), label)
    return torch.where(elevation_deg > 60.0, torch.full_like(label, 3), label)


def spherical_to_position(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Camera position (B, 3) for the given angles (degrees) and distance."""
    el, az = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [distance * torch.cos(el) * torch.cos(az), distance * torch.cos(el) * torch.sin(az), distance * torch.sin(el)],
        dim=-1,
    )


def look_at(position: torch.Tensor, target: torch.Tensor, azimuth_deg: torch.Tensor, up_noise: torch.Tensor | None = None) -> torch.Tensor:
    """OpenGL camera-to-world (B, 4, 4) for cameras at `position` looking at `target`.

    The right axis starts from the azimuth's tangent (-sin az, cos az, 0), which is exact for an
    un-jittered camera and stays well defined straight overhead, where cross(forward, z) vanishes.
    """
    forward = torch.nn.functional.normalize(target - position, dim=-1)
    az = torch.deg2rad(azimuth_deg)
    right = torch.stack([-torch.sin(az), torch.cos(az), torch.zeros_like(az)], dim=-1)
    if up_noise is not None:
        right = right + up_noise
    right = torch.nn.functional.normalize(right - (right * forward).sum(-1, keepdim=True) * forward, dim=-1)
    up = torch.cross(right, forward, dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype, device=position.device)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, up, -forward, position
    c2w[:, 3, 3] = 1.0
    return c2w


def make_cameras(
    elevation: torch.Tensor,
    azimuth: torch.Tensor,
    distance: torch.Tensor,
    fovy: torch.Tensor,
    center: torch.Tensor | None = None,
    up_noise: torch.Tensor | None = None,
) -> Cameras:
    """Cameras from per-camera angles (degrees), distances and vertical fields of view."""
    azimuth = wrap_azimuth(azimuth)
    target = torch.zeros(elevation.shape[0], 3, dtype=elevation.dtype, device=elevation.device)
    if center is not None:
        target = target + center
    position = spherical_to_position(elevation, azimuth, distance) + target
    return Cameras(look_at(position, target, azimuth, up_noise), fovy, elevation, azimuth, distance)


def _uniform(lo_hi: tuple[float, float], n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * random.rand((n,), generator, device)


def sample_cameras(
    cfg: CameraConfig, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Cameras:
    """Random cameras from the configured ranges (seeded through `generator`)."""
    if cfg.uniform_sphere:
        lo, hi = (math.sin(math.radians(v)) for v in cfg.elevation_range)
        elevation = torch.rad2deg(torch.asin(_uniform((lo, hi), batch_size, generator, device)))
    else:
        elevation = _uniform(cfg.elevation_range, batch_size, generator, device)
    azimuth = _uniform(cfg.azimuth_range, batch_size, generator, device)
    distance = _uniform(cfg.distance_range, batch_size, generator, device)
    fovy = _uniform(cfg.fovy_range, batch_size, generator, device)
    center = up_noise = None
    if cfg.center_jitter > 0:
        center = cfg.center_jitter * random.randn((batch_size, 3), generator, device)
    if cfg.up_jitter > 0:
        up_noise = cfg.up_jitter * random.randn((batch_size, 3), generator, device)
    return make_cameras(elevation, azimuth, distance, fovy, center, up_noise)


def turntable(
    n_frames: int, elevation: float = 15.0, distance: float = 2.0, fovy: float = 45.0, device: torch.device | str = "cpu"
) -> Cameras:
    """A full 360° orbit starting at the front (azimuth 0)."""
    if n_frames <= 0:
        raise ConfigError(f"frames must be positive, got {n_frames}")
    azimuth = torch.arange(n_frames, dtype=torch.float32, device=device) * (360.0 / n_frames)
    full = lambda v: torch.full((n_frames,), float(v), device=device)  # noqa: E731
    return make_cameras(full(elevation), azimuth, full(distance), full(fovy))


def focal_length(fovy_deg: torch.Tensor, height: int) -> torch.Tensor:
    """Focal length in pixels for a vertical field of view."""
    return 0.5 * height / torch.tan(0.5 * torch.deg2rad(fovy_deg))


def generate_rays(cameras: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and unit directions, each (B, H, W, 3), through pixel centres."""
    if height <= 0 or width <= 0:
        raise ConfigError(f"image size must be positive, got {height}x{width}")
    device, dtype = cameras.c2w.device, cameras.c2w.dtype
    j = torch.arange(width, device=device, dtype=dtype) + 0.5
    i = torch.arange(height, device=device, dtype=dtype) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    f = focal_length(cameras.fovy, height).view(-1, 1, 1)  # (B, 1, 1)
    dirs_cam = torch.stack(
        [(jj - 0.5 * width) / f, -(ii - 0.5 * height) / f, -torch.ones_like(jj).expand_as((jj - 0.5 * width) / f)], dim=-1
    )  # (B, H, W, 3)
    rot = cameras.c2w[:, :3, :3]
    dirs = torch.einsum("bij,bhwj->bhwi", rot, dirs_cam)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = cameras.position.view(-1, 1, 1, 3).expand_as(dirs)
    return origins, dirs
