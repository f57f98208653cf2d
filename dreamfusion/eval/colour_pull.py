"""The prior's pull on colour alone: the true toy geometry, one free albedo, the run's SDS.

The fixed-point check (fixed_point.py) moves a whole field; this isolates colour. Every step renders
the true object exactly as the prior's training data does (toyworld/scenes.py: the same cameras,
lights, shading mix, grey backgrounds and 2x supersampling) with one albedo (3 logits) as the only
parameter, and applies the run's SDS to it. Where the albedo settles is what the prior, the guidance
scale and the t range ask of a perfectly shaped object. Knobs that imitate a field's defects tell
which defect moves colour: `normal_noise` perturbs the shading normals (a hash-grid NeRF's speckled
density gradient), `opacity` makes the object partly transparent over the background (fog). It
takes a minute or two on a CPU, so it is the first thing to run on a colour complaint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..cameras import CameraConfig, Cameras, sample_cameras
from ..render.colour_gate import scored_below
from ..render.shading import LightConfig, shade
from ..toyworld.scenes import ToyRenderConfig, TracedView, composite, trace_object
from ..utils import random
from .colour import colour_difference, true_mean_albedo


@dataclass
class ShadedGeometry:
    """The true object's coverage and shading at the supersampled resolution, for any albedo."""

    view: TracedView
    intensity: torch.Tensor  # (B*S*S, 1): ambient + diffuse * lambert (lit renders), 1 (albedo renders)
    cfg: ToyRenderConfig

    def image(self, albedo: torch.Tensor, opacity: float = 1.0) -> torch.Tensor:
        """(B, R, R, 3) renders with one albedo (3,), composited and box-filtered as the toy renders are."""
        colour = opacity * (self.intensity * albedo).clamp(0.0, 1.0) + (1.0 - opacity) * self.view.background
        return composite(self.view, colour, self.cfg)


def shaded_geometry(shape: str, cameras: Cameras, cfg: ToyRenderConfig, light_cfg: LightConfig,
                    generator: torch.Generator, normal_noise: float = 0.0) -> ShadedGeometry:
    """The toy renders' own trace (same generator, same images), shaded with white albedo; the
    shading normals optionally perturbed by Gaussian noise of std `normal_noise`."""
    view = trace_object(shape, cameras, cfg, light_cfg, generator)
    n = view.normals
    if normal_noise > 0:
        n = F.normalize(n + normal_noise * random.randn(n.shape, generator, n.device, n.dtype), dim=-1)
    white = torch.ones_like(view.points)
    lambert = shade("lambertian", white, n, view.points, view.lights, light_cfg.ambient, light_cfg.diffuse)[:, :1]
    intensity = torch.where(view.lit.unsqueeze(-1), lambert, torch.ones_like(lambert))
    return ShadedGeometry(view, intensity, cfg)


@dataclass
class ColourPull:
    prompt: str
    start: list[float]
    final: list[float]  # the albedo averaged over the last quarter of the steps
    truth: list[float]
    delta_e_start: float
    delta_e: float
    delta_lightness: float
    delta_chroma: float


def colour_pull(guidance, shape: str, colour: str, camera: CameraConfig, light: LightConfig,
                start: tuple[float, float, float] | None = None, steps: int = 300, batch_size: int = 2,
                lr: float = 0.03, lambertian_prob: float = 0.75, normal_noise: float = 0.0,
                opacity: float = 1.0, seed: int = 0, colour_t_max: Callable[[int], float] | None = None,
                background_grey_range: tuple[float, float] = ToyRenderConfig.background_grey_range) -> ColourPull:
    """Run SDS on the albedo of the true `shape` (from `start`, default the palette colour) and
    report where it settles against the palette. `guidance` must be prepared with the prompt;
    colour_t_max: step -> the fraction of the timesteps above which a render does not move the
    albedo (the run's train.colour_t_max, read at each step as the guidance reads its t range)."""
    gen = torch.Generator().manual_seed(seed)
    truth = np.asarray(true_mean_albedo(shape, colour))
    begin = truth if start is None else np.asarray(start, dtype=np.float64)
    logit = torch.logit(torch.tensor(begin, dtype=torch.float32).clamp(0.01, 0.99)).requires_grad_(True)
    opt = torch.optim.Adam([logit], lr=lr)
    cfg = ToyRenderConfig(resolution=guidance.resolution, lambertian_prob=lambertian_prob,
                          background_grey_range=tuple(background_grey_range))
    history = []
    for step in range(steps):
        cams = sample_cameras(camera, batch_size, gen)
        geometry = shaded_geometry(shape, cams, cfg, light, gen, normal_noise)
        image = geometry.image(torch.sigmoid(logit), opacity)  # (B, R, R, 3)
        t = guidance.sample_t(batch_size, step, gen)  # (B,) the draw guidance would make
        t_max = 1.0 if colour_t_max is None else colour_t_max(step)
        if t_max < 1.0:
            keep = scored_below(t, t_max, guidance.num_train_timesteps).view(-1, 1, 1, 1)
            image = torch.where(keep, image, image.detach())
        out = guidance(image, cams, step=step, generator=gen, t=t)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        history.append(torch.sigmoid(logit).detach())
    final = torch.stack(history[-max(1, steps // 4):]).mean(0).double().numpy()
    diff = colour_difference(final, truth)
    return ColourPull(guidance.prompt or "", [round(float(v), 4) for v in begin], [round(float(v), 4) for v in final],
                      [round(float(v), 4) for v in truth], round(colour_difference(begin, truth).delta_e, 3),
                      round(diff.delta_e, 3), round(diff.delta_lightness, 3), round(diff.delta_chroma, 3))


@dataclass
class TruthPulls:
    """The prior's mean pulls on the true object at albedo k * palette, one entry per k (same draws)."""

    scales: list[float]
    colour: list[float]  # along the palette colour; positive: brighter
    opacity: list[float]  # on the object's opacity at 1; positive: the prior holds the object, negative: it fades it


def brightness_pull(guidance, shape: str, colour: str, camera: CameraConfig, light: LightConfig,
                    scales: tuple[float, ...] = (0.4, 0.6, 0.8, 0.9, 1.0, 1.1), samples: int = 64,
                    batch_size: int = 2, lambertian_prob: float = 0.75, normal_noise: float = 0.0,
                    step: int = 0, seed: int = 0,
                    background_grey_range: tuple[float, float] = ToyRenderConfig.background_grey_range) -> TruthPulls:
    """The prior's mean pull on the albedo k * palette, for each k in `scales`, along the palette
    colour: the SDS descent direction projected on it, averaged over `samples` batches (positive:
    brighter). Where it changes sign from + to - the albedo settles; from - to + it leaves, so a
    colour started below such a point falls toward black. The same draws for every k.

    With it, the pull on the object's opacity (at 1, fully opaque): SDS's descent direction on a
    global opacity that blends the object into the background. Negative means the prior would
    rather see the background there, so a field's density is eroded even where shape and colour
    are exact; only a saturated surface (whose opacity gradient vanishes) survives it."""
    truth = torch.tensor(true_mean_albedo(shape, colour), dtype=torch.float32)
    cfg = ToyRenderConfig(resolution=guidance.resolution, lambertian_prob=lambertian_prob,
                          background_grey_range=tuple(background_grey_range))
    colour_pulls, opacity_pulls = [], []
    for k in scales:
        gen = torch.Generator().manual_seed(seed)
        albedo = (truth * k).clamp(0.0, 1.0).requires_grad_(True)
        opacity = torch.tensor(1.0, requires_grad=True)
        total, total_opacity = torch.zeros(3), 0.0
        for _ in range(samples):
            cams = sample_cameras(camera, batch_size, gen)
            geometry = shaded_geometry(shape, cams, cfg, light, gen, normal_noise)
            out = guidance(geometry.image(albedo, opacity), cams, step=step, generator=gen)
            d_albedo, d_opacity = torch.autograd.grad(out.loss, [albedo, opacity])
            total += d_albedo
            total_opacity += float(d_opacity)
        colour_pulls.append(float(-(total / samples) @ truth / truth.norm()))
        opacity_pulls.append(-total_opacity / samples)
    return TruthPulls(list(scales), colour_pulls, opacity_pulls)
