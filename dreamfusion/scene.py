"""The differentiable scene: field + background + renderer, built from one config section each.

`SceneConfig` is the part of a run's config that a saved workspace needs to rebuild the scene
(export and video read only this); training adds its own sections beside it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .cameras import CameraConfig
from .field.nerf import FieldConfig, NeRFField
from .render.background import Background, BackgroundConfig
from .render.renderer import RenderConfig, VolumeRenderer
from .render.shading import LightConfig


@dataclass
class SceneConfig:
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    background: BackgroundConfig = dataclasses.field(default_factory=BackgroundConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    light: LightConfig = dataclasses.field(default_factory=LightConfig)


@dataclass
class Scene:
    cfg: SceneConfig
    field: NeRFField
    background: Background
    renderer: VolumeRenderer

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"field": self.field.state_dict(), "background": self.background.state_dict(), "renderer": self.renderer.occupancy_state()}

    def load_state_dict(self, state: dict) -> None:
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.renderer.load_occupancy_state(state.get("renderer", {}))


def build_scene(cfg: SceneConfig, device: torch.device | str = "cpu", seed: int | None = 0) -> Scene:
    field_ = NeRFField(cfg.field, device=device, seed=seed)
    background = Background(cfg.background).to(device)
    renderer = VolumeRenderer(field_, background, cfg.render)
    return Scene(cfg, field_, background, renderer)
