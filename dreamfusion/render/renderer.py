"""The volume renderer: cameras → rays → samples → field → shading → composited images.

Samples are produced in a packed layout (ray index, distance, bin width per sample) by one of two
samplers: dense stratified sampling in the box with occupancy-grid skipping (pure PyTorch, any
device), or nerfacc's OccGridEstimator on CUDA. Either way only occupied samples reach the field,
and the result is the same set of images plus per-sample weights, normals and view directions
for the regularizers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..cameras import Cameras, generate_rays
from ..config import ConfigError, require_positive
from ..field.nerf import NeRFField, NormalType
from ..representation import RenderOutput
from ..utils.capabilities import failure_reason, nerfacc_cuda_available
from .background import Background
from .colour_gate import AlbedoGrad, gate_albedo, per_row
from .occupancy import NerfaccOccupancy, OccupancyConfig, OccupancyGrid
from .shading import shade
from .volume import compositing_weights, ray_box_intersection, stratified_samples


@dataclass
class RenderConfig:
    n_samples: int = 64  # per ray across the (occupied part of the) box
    backend: Literal["auto", "dense", "nerfacc"] = "auto"
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    eval_chunk: int = 8192  # rays per chunk when rendering without gradients
    # Samples skipped before the differentiable pass (as nerfacc's sampling does): a cheap no-grad
    # density pass drops samples behind an opaque surface (transmittance below the first) or
    # nearly transparent (alpha below the second). Both 0 disable the pre-pass.
    early_stop_transmittance: float = 1e-4
    alpha_threshold: float = 0.0

    def validate(self, prefix: str = "") -> None:
        require_positive(prefix, "n_samples", self.n_samples)
        require_positive(prefix, "eval_chunk", self.eval_chunk)


def choose_backend(cfg: RenderConfig, device: torch.device) -> str:
    """'nerfacc' or 'dense'. 'auto' takes nerfacc on CUDA when its kernels pass their probe
    (capabilities.py), else the dense PyTorch sampler; asking for nerfacc where it cannot run is an error."""
    if cfg.backend == "dense":
        return "dense"
    if cfg.backend == "auto":
        usable = device.type == "cuda" and cfg.occupancy.enabled and nerfacc_cuda_available()
        return "nerfacc" if usable else "dense"
    if not cfg.occupancy.enabled:
        raise ConfigError("render.backend 'nerfacc' needs render.occupancy.enabled: true")
    if device.type != "cuda" or not nerfacc_cuda_available():
        why = failure_reason("nerfacc") or "it needs a CUDA device"
        raise ConfigError(f"render.backend 'nerfacc' cannot be used: {why}; use 'dense' or 'auto'")
    return "nerfacc"


class VolumeRenderer(nn.Module):
    def __init__(self, field: NeRFField, background: Background, cfg: RenderConfig):
        super().__init__()
        self.field, self.background, self.cfg = field, background, cfg
        bound = field.cfg.bound
        self.render_step = 2 * bound * math.sqrt(3) / cfg.n_samples
        device = next(field.parameters()).device
        self.backend = backend = choose_backend(cfg, device)
        self.occupancy: OccupancyGrid | NerfaccOccupancy | None = None
        if cfg.occupancy.enabled:
            grid_cls = NerfaccOccupancy if backend == "nerfacc" else OccupancyGrid
            self.occupancy = grid_cls(cfg.occupancy, bound, self.render_step).to(device)

    # ---- occupancy --------------------------------------------------------------------------------
    def occupancy_state(self) -> dict[str, torch.Tensor]:
        return self.occupancy.state_dict() if self.occupancy is not None else {}

    def load_occupancy_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.occupancy is not None and state:
            self.occupancy.load_state_dict(state)

    @torch.no_grad()
    def update_occupancy(self, step: int, generator: torch.Generator | None = None) -> None:
        if self.occupancy is not None:
            self.occupancy.update(self.field.density, step, generator)

    # ---- sampling (packed) ------------------------------------------------------------------------
    def _dense_samples(self, origins, dirs, jitter, generator):
        """Stratified samples across the box, those in empty cells dropped; packed samples + dense mask."""
        bound, s = self.field.cfg.bound, self.cfg.n_samples
        near, far, hit = ray_box_intersection(origins, dirs, bound)
        grid = self.occupancy if isinstance(self.occupancy, OccupancyGrid) and self.occupancy.ready else None
        t, deltas = stratified_samples(near, far, s, jitter, generator)  # (R, S)
        mask = hit.unsqueeze(-1).expand_as(t)
        if grid is not None:
            pts = origins.unsqueeze(1) + t.unsqueeze(-1) * dirs.unsqueeze(1)
            mask = mask & grid.query(pts.view(-1, 3)).view(mask.shape)
        if self.cfg.early_stop_transmittance > 0 or self.cfg.alpha_threshold > 0:
            mask = self._visible(origins, dirs, t, deltas, mask)
        ray_indices = torch.arange(t.shape[0], device=t.device).unsqueeze(-1).expand_as(t)[mask]
        return ray_indices, t[mask], deltas[mask], (t, deltas, mask)

    @torch.no_grad()
    def _visible(self, origins, dirs, t, deltas, mask) -> torch.Tensor:
        """Mask (R, S) of samples that can still contribute, from a no-grad density pass."""
        pts = origins.unsqueeze(1) + t.unsqueeze(-1) * dirs.unsqueeze(1)
        sigma = torch.zeros_like(t)
        sigma[mask] = self.field.density(pts[mask]).float()
        tau = sigma * deltas
        transmittance = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))
        alpha = 1.0 - torch.exp(-tau)
        return mask & (transmittance > self.cfg.early_stop_transmittance) & (alpha > self.cfg.alpha_threshold)

    def _nerfacc_samples(self, origins, dirs, jitter):
        est = self.occupancy.estimator

        def sigma_fn(t_starts, t_ends, ray_indices):
            pts = origins[ray_indices] + dirs[ray_indices] * ((t_starts + t_ends) / 2).unsqueeze(-1)
            return self.field.density(pts)

        ray_indices, t_starts, t_ends = est.sampling(
            origins, dirs, sigma_fn=sigma_fn, render_step_size=self.render_step, stratified=jitter, alpha_thre=0.0
        )
        return ray_indices.long(), (t_starts + t_ends) / 2, t_ends - t_starts, None

    # ---- rendering ----------------------------------------------------------------------------------
    def render_rays(
        self,
        origins: torch.Tensor,  # (R, 3)
        dirs: torch.Tensor,  # (R, 3) unit
        light_per_ray: torch.Tensor | None,  # (R, 3)
        shading: str,
        ambient: float,
        diffuse: float,
        normals: NormalType | None,
        compute_normals: bool,
        generator: torch.Generator | None,
        albedo_grad: AlbedoGrad = True,
    ) -> dict[str, torch.Tensor]:
        n_rays = origins.shape[0]
        jitter = self.training
        if self.backend == "nerfacc":
            ray_idx, t, deltas, dense = self._nerfacc_samples(origins, dirs, jitter)
        else:
            ray_idx, t, deltas, dense = self._dense_samples(origins, dirs, jitter, generator)
        d = dirs[ray_idx]
        pts = origins[ray_idx] + t.unsqueeze(-1) * d
        need_normals = compute_normals or shading != "albedo"
        out = self.field(pts, normals=(normals or self.field.cfg.normal_type) if need_normals else None)
        out = out.float()  # a field autocast to bf16/fp16 (train.field_precision) composites in fp32
        # Compositing weights per packed sample.
        if dense is not None:
            t_dense, deltas_dense, mask = dense
            sigma_dense = torch.zeros_like(t_dense).masked_scatter(mask, out.density)
            weights = compositing_weights(sigma_dense, deltas_dense)[mask]
        else:
            import nerfacc

            weights, _, _ = nerfacc.render_weight_from_density(
                t - deltas / 2, t + deltas / 2, out.density, ray_indices=ray_idx, n_rays=n_rays
            )
        light = light_per_ray[ray_idx] if light_per_ray is not None else origins[ray_idx]
        albedo = gate_albedo(out.albedo, albedo_grad, ray_idx)  # albedo_grad: bool, or per ray (R,)
        color = shade(shading, albedo, out.normal, pts, light, ambient, diffuse)

        def accumulate(values: torch.Tensor) -> torch.Tensor:
            acc = torch.zeros(n_rays, values.shape[-1], device=values.device, dtype=values.dtype)
            return acc.index_add(0, ray_idx, weights.unsqueeze(-1) * values)

        result = {
            "rgb": accumulate(color),
            "albedo": accumulate(out.albedo),
            "opacity": accumulate(torch.ones_like(weights).unsqueeze(-1)),
            "depth": accumulate(t.unsqueeze(-1)),
            "normal": accumulate(out.normal) if out.normal is not None else torch.zeros(n_rays, 3, device=origins.device),
            "weights": weights,
            "ray_indices": ray_idx,
            "sample_dirs": d,
            "sample_t": t,
        }
        if out.normal is not None:
            result["sample_normals"] = out.normal
        if out.predicted_normal is not None and need_normals:
            result["sample_predicted_normals"] = out.predicted_normal
        return result

    def forward(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        shading: str = "albedo",
        light_positions: torch.Tensor | None = None,  # (B, 3); default: a light at each camera
        ambient: float = 0.1,
        diffuse: float = 0.9,
        normals: NormalType | None = None,  # which normals (default: the field's normal_type)
        compute_normals: bool = True,  # False skips them (albedo shading only, no normal map)
        generator: torch.Generator | None = None,
        albedo_grad: AlbedoGrad = True,  # False, or False for an image of a (B,) bool: the albedo as a constant
    ) -> RenderOutput:
        b = cameras.batch_size
        origins, dirs = generate_rays(cameras, height, width)  # (B, H, W, 3)
        bg = self.background(dirs, generator)  # (B, H, W, 3)
        o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        light_per_ray = None
        if light_positions is not None:
            light_per_ray = light_positions.view(b, 1, 3).expand(b, height * width, 3).reshape(-1, 3)
        args = (shading, ambient, diffuse, normals, compute_normals, generator)
        if torch.is_grad_enabled() or o.shape[0] <= self.cfg.eval_chunk:
            res = self.render_rays(o, d, light_per_ray, *args, per_row(albedo_grad, height * width))
        else:  # no gradient to gate
            res = self._render_chunked(o, d, light_per_ray, args)
        shape = (b, height, width)
        opacity = res["opacity"].view(*shape, 1)
        rgb = res["rgb"].view(*shape, 3) + (1.0 - opacity) * bg
        return RenderOutput(
            rgb=rgb,
            opacity=opacity,
            depth=res["depth"].view(*shape, 1),
            normal=res["normal"].view(*shape, 3),
            albedo=res["albedo"].view(*shape, 3),
            weights=res["weights"],
            ray_indices=res["ray_indices"],
            sample_normals=res.get("sample_normals"),
            sample_predicted_normals=res.get("sample_predicted_normals"),
            sample_dirs=res["sample_dirs"],
            sample_t=res["sample_t"],
        )

    def _render_chunked(self, o, d, light_per_ray, args) -> dict[str, torch.Tensor]:
        """Without gradients, render rays in chunks to bound memory (per-sample outputs concatenated)."""
        parts: list[dict[str, torch.Tensor]] = []
        c = self.cfg.eval_chunk
        for start in range(0, o.shape[0], c):
            lp = light_per_ray[start : start + c] if light_per_ray is not None else None
            part = self.render_rays(o[start : start + c], d[start : start + c], lp, *args)
            part["ray_indices"] = part["ray_indices"] + start
            parts.append(part)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
