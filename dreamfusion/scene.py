"""The coarse stage's representation: a NeRF field + background + volume renderer.

`SceneConfig` holds the sections a saved workspace needs to rebuild the scene (export and video
read only these); the run config (run_config.RunConfig) extends it with training, guidance and
export sections. `Scene` implements representation.Representation: parameter groups, per-step
schedules (fading density blob, progressive hash-grid levels, occupancy refreshes), rendering,
DreamFusion's regularizers, checkpoint state and mesh export.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .cameras import CameraConfig, Cameras
from .field.nerf import FieldConfig, NeRFField, normal_consistency_loss
from .render.background import Background, BackgroundConfig
from .render.colour_gate import AlbedoGrad
from .render.renderer import RenderConfig, VolumeRenderer
from .render.shading import LightConfig
from .representation import RenderOutput, Representation

if TYPE_CHECKING:  # run_config imports this module
    from .run_config import RunConfig, TrainConfig


@dataclass
class SceneConfig:
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    background: BackgroundConfig = dataclasses.field(default_factory=BackgroundConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    light: LightConfig = dataclasses.field(default_factory=LightConfig)


def depth_variance(out: RenderOutput, min_opacity: float = 0.5) -> torch.Tensor:
    """Mean over opaque rays of the variance of the sample distances under the compositing weights
    (world units squared; threestudio's z-variance). Score distillation is content with a fog of a
    few density units that turns opaque over a fifth of the object; this asks for a surface."""
    opacity = out.opacity.reshape(-1).float()
    mean_t = out.depth.reshape(-1).float() / opacity.clamp_min(1e-6)
    w, idx = out.weights.float(), out.ray_indices
    spread = torch.zeros_like(opacity).index_add(0, idx, w * (out.sample_t.float() - mean_t[idx]).square())
    opaque = (opacity > min_opacity).to(spread.dtype)  # a mask, not an index: no wait for the device
    return (spread / opacity.clamp_min(1e-6) * opaque).sum() / opaque.sum().clamp_min(1.0)


def nerf_regularizers(out: RenderOutput) -> dict[str, torch.Tensor]:
    """DreamFusion's terms on one volume render, unweighted, keyed like TrainConfig's lambda_<key>."""
    opacity = out.opacity.float()
    clamped = opacity.clamp(1e-5, 1 - 1e-5)
    terms = {
        "opacity_dreamfusion": torch.sqrt(opacity.square() + 0.01).mean(),
        "opacity_mean": opacity.mean(),
        "opacity_entropy": -(clamped * clamped.log() + (1 - clamped) * (1 - clamped).log()).mean(),
    }
    if out.sample_t is not None:
        terms["depth_variance"] = depth_variance(out)
    if out.sample_normals is not None:
        n_rays = out.opacity.numel()
        facing_away = (out.sample_normals * out.sample_dirs).sum(-1).clamp_min(0).square()
        terms["orientation"] = (out.weights.detach() * facing_away).sum() / n_rays
        if out.sample_predicted_normals is not None:
            terms["normal"] = normal_consistency_loss(out.weights, out.sample_predicted_normals, out.sample_normals)
    return terms


@dataclass
class Scene(Representation):
    cfg: SceneConfig
    field: NeRFField
    background: Background
    renderer: VolumeRenderer
    schedule: "TrainConfig | None" = None  # blob fade and progressive levels move with the step when set
    autocast_dtype: torch.dtype | None = None  # the field's arithmetic (train.field_precision)

    @property
    def bound(self) -> float:
        return self.field.cfg.bound

    @classmethod
    def build(cls, cfg: "RunConfig", device: torch.device | str) -> "Scene":
        """DreamFusion's start: the density blob, with the coarse training schedules."""
        scene = build_scene(cfg, device=device, seed=cfg.seed)  # RunConfig extends SceneConfig
        scene.schedule = cfg.train
        return scene

    @classmethod
    def blank(cls, cfg: SceneConfig, device: torch.device | str) -> "Scene":
        return build_scene(cfg, device=device)

    def volume(self) -> NeRFField:
        return self.field

    # ---- training ------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        groups = self.field.parameter_groups()
        t = self.schedule
        lr = (t.lr_encoding, t.lr_network, t.lr_background) if t is not None else (1e-2, 1e-3, 1e-3)
        return [
            {"params": groups["encoding"], "lr": lr[0], "name": "encoding"},
            {"params": groups["network"] + groups["normal_head"], "lr": lr[1], "name": "network"},
            {"params": list(self.background.parameters()), "lr": lr[2], "name": "background"},
        ]

    def set_step(self, step: int) -> None:
        """The field's blob scale and active hash-grid levels as of `step` (saved with the weights)."""
        t = self.schedule
        if t is not None:
            self.field.blob_scale = t.blob_scale(step)
            self.field.active_levels = t.active_levels(step, self.cfg.field.encoding.n_levels)

    def prepare_step(self, step: int, generator: torch.Generator | None = None) -> None:
        self.set_step(step)
        self.renderer.train()
        occ = self.cfg.render.occupancy
        if occ.enabled and step % occ.update_every == 0:
            self.renderer.update_occupancy(step, generator)

    def render(self, cameras: Cameras, height: int, width: int, shading: str = "albedo",
               light_positions: torch.Tensor | None = None, ambient: float = 0.1, diffuse: float = 0.9,
               generator: torch.Generator | None = None, albedo_grad: AlbedoGrad = True) -> RenderOutput:
        device_type = cameras.c2w.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            return self.renderer(cameras, height, width, shading=shading, light_positions=light_positions,
                                 ambient=ambient, diffuse=diffuse, generator=generator, albedo_grad=albedo_grad)

    def regularizers(self, out: RenderOutput) -> dict[str, torch.Tensor]:
        return nerf_regularizers(out)

    def train(self, mode: bool = True) -> "Scene":
        self.renderer.train(mode)
        return self

    # ---- state and export ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"field": self.field.state_dict(), "background": self.background.state_dict(), "renderer": self.renderer.occupancy_state()}

    def load_state_dict(self, state: dict) -> None:
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.renderer.load_occupancy_state(state.get("renderer", {}))

    def export_mesh(self, out_dir: str | Path, cfg: Any, progress: bool = True) -> Any:
        from .export import export_mesh

        return export_mesh(self.field.eval(), out_dir, cfg, bound=self.bound, progress=progress)


def build_scene(cfg: SceneConfig, device: torch.device | str = "cpu", seed: int | None = 0) -> Scene:
    field_ = NeRFField(cfg.field, device=device, seed=seed)
    background = Background(cfg.background).to(device)
    renderer = VolumeRenderer(field_, background, cfg.render)
    return Scene(cfg, field_, background, renderer)
