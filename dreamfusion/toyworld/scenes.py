"""Procedural toy scenes rendered with the toolkit's own cameras, lights and shading.

Each object is a signed distance function centred at the origin, axis along +z, inside radius
~0.65 of the [-1, 1]^3 box. Rays come from `generate_rays`, lights from `sample_lights` and colours
from `shade`, with the same distributions the optimization draws from, so the prior never sees
an image the optimization could not render (the first thing that breaks score distillation).
Images are rendered at 2x and box-filtered, giving the soft edges a volume renderer produces.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..cameras import CameraConfig, Cameras, generate_rays, sample_cameras
from ..render.shading import LightConfig, sample_lights, shade
from ..utils import random
from .vocabulary import ALL_SHAPES, COLOURS, MARK_COLOUR, MARK_COLOUR_ON_WHITE


def _box(p: torch.Tensor, half: float, rounding: float = 0.03) -> torch.Tensor:
    q = p.abs() - (half - rounding)
    return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0) - rounding


def sdf(shape: str, p: torch.Tensor) -> torch.Tensor:
    """Signed distance (N,) of points (N, 3) to `shape`."""
    x, y, z = p.unbind(-1)
    if shape == "sphere":
        return p.norm(dim=-1) - 0.5
    if shape in ("cube", "marked cube"):
        return _box(p, 0.4)
    if shape == "cylinder":
        d = torch.stack([torch.sqrt(x * x + y * y) - 0.38, z.abs() - 0.45], -1)
        return d.clamp_min(0).norm(dim=-1) + d.amax(-1).clamp_max(0)
    if shape == "cone":  # base radius 0.5 at z = -0.45, apex at z = +0.45
        h, r = 0.9, 0.5
        q = torch.stack([torch.sqrt(x * x + y * y), z + 0.45], -1)
        # max of the signed distances to the slanted side and the base plane: a conservative bound
        side = ((q[:, 0] - r) * h + q[:, 1] * r) / (h * h + r * r) ** 0.5
        return torch.maximum(side, -q[:, 1])
    if shape == "torus":
        return torch.sqrt((torch.sqrt(x * x + y * y) - 0.4) ** 2 + z * z) - 0.16
    raise ValueError(f"unknown toy shape {shape!r}; known: {', '.join(ALL_SHAPES)}")


def albedo(shape: str, colour: str, p: torch.Tensor) -> torch.Tensor:
    """Surface colour (N, 3); the marked cube carries a square on its +x (azimuth 0) face."""
    base = torch.tensor(COLOURS[colour], dtype=p.dtype, device=p.device).expand(p.shape[0], 3)
    if shape != "marked cube":
        return base
    mark = torch.tensor(MARK_COLOUR_ON_WHITE if colour == "white" else MARK_COLOUR, dtype=p.dtype, device=p.device)
    on_mark = (p[:, 0] > 0.35) & (p[:, 1].abs() < 0.22) & (p[:, 2].abs() < 0.22)
    return torch.where(on_mark.unsqueeze(-1), mark.expand_as(base), base)


def _sdf_normal(shape: str, p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    offsets = torch.eye(3, dtype=p.dtype, device=p.device) * eps
    grad = torch.stack([sdf(shape, p + o) - sdf(shape, p - o) for o in offsets], -1)
    return F.normalize(grad, dim=-1)


@dataclass
class ToyRenderConfig:
    resolution: int = 32
    supersample: int = 2
    lambertian_prob: float = 0.75  # else albedo only (DreamFusion: shaded with p = 0.75)
    background_grey_range: tuple[float, float] = (0.3, 0.9)  # the shipped priors' (PriorTrainConfig, configs/toy*.yaml)
    march_steps: int = 40


@dataclass
class TracedView:
    """One batch of cameras traced into a toy object, at the supersampled resolution S = R * supersample."""

    points: torch.Tensor  # (B*S*S, 3) where each ray stops (on the surface where `hit`)
    hit: torch.Tensor  # (B*S*S,) bool
    normals: torch.Tensor  # (B*S*S, 3) the SDF's unit normal at `points`
    lights: torch.Tensor  # (B*S*S, 3) the light of each ray's camera
    lit: torch.Tensor  # (B*S*S,) bool: lambertian (else albedo only), one draw per image
    background: torch.Tensor  # (B*S*S, 3) one grey per image


def trace_object(shape: str, cameras: Cameras, cfg: ToyRenderConfig, light_cfg: LightConfig,
                 generator: torch.Generator) -> TracedView:
    """Sphere-trace `shape` and draw each image's light, shading mode and background grey (in that order)."""
    b, res = cameras.batch_size, cfg.resolution * cfg.supersample
    origins, dirs = generate_rays(cameras, res, res)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    t = torch.zeros(o.shape[0])
    for _ in range(cfg.march_steps):  # sphere tracing: every SDF here is exact or a lower bound
        t = t + sdf(shape, o + t.unsqueeze(-1) * d).clamp_min(0)
    p = o + t.unsqueeze(-1) * d
    hit = sdf(shape, p) < 2e-3
    lights = sample_lights(light_cfg, cameras.position, generator)
    light_per_ray = lights.view(b, 1, 3).expand(b, res * res, 3).reshape(-1, 3)
    shaded = random.rand((b,), generator, p.device) < cfg.lambertian_prob
    lit = shaded.view(b, 1).expand(b, res * res).reshape(-1)
    lo, hi = cfg.background_grey_range
    grey = lo + (hi - lo) * random.rand((b,), generator, p.device)
    bg = grey.view(b, 1).expand(b, res * res).reshape(-1, 1).expand(-1, 3)
    return TracedView(p, hit, _sdf_normal(shape, p), light_per_ray, lit, bg)


def composite(view: TracedView, colour: torch.Tensor, cfg: ToyRenderConfig) -> torch.Tensor:
    """Surface colours (B*S*S, 3) over the background, box-filtered: images (B, R, R, 3) in [0, 1]."""
    res = cfg.resolution * cfg.supersample
    img = torch.where(view.hit.unsqueeze(-1), colour, view.background).view(-1, res, res, 3)
    img = F.avg_pool2d(img.permute(0, 3, 1, 2), cfg.supersample).permute(0, 2, 3, 1)
    return img.clamp(0, 1)


def render_object(
    shape: str,
    colour: str,
    cameras: Cameras,
    cfg: ToyRenderConfig,
    light_cfg: LightConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, R, R, 3) in [0, 1] and silhouettes (B, R, R) of one object seen by `cameras`."""
    b, res = cameras.batch_size, cfg.resolution * cfg.supersample
    view = trace_object(shape, cameras, cfg, light_cfg, generator)
    a = albedo(shape, colour, view.points)
    lit = shade("lambertian", a, view.normals, view.points, view.lights, light_cfg.ambient, light_cfg.diffuse)
    img = composite(view, torch.where(view.lit.unsqueeze(-1), lit, a), cfg)
    mask = F.avg_pool2d(view.hit.float().view(b, 1, res, res), cfg.supersample)[:, 0]
    return img, mask


def render_random(
    shape: str, colour: str, n: int, cam_cfg: CameraConfig, cfg: ToyRenderConfig, light_cfg: LightConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, Cameras]:
    cams = sample_cameras(cam_cfg, n, generator)
    img, mask = render_object(shape, colour, cams, cfg, light_cfg, generator)
    return img, mask, cams
