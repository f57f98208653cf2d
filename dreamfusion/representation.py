"""What the trainer and the exporter need of a 3D representation, and nothing more.

A representation is whatever can be rendered from cameras, regularized, checkpointed and exported:
the coarse stage's NeRF (scene.py) and the fine stage's DMTet (dmtet/scene.py) are two; 3D Gaussians
could be a third. The training loop (train.py) only ever calls these methods, so a new
representation needs no change there:

    groups = rep.parameter_groups()                 # named optimizer groups with their learning rates
    rep.prepare_step(step, generator)               # schedules (set_step), occupancy refreshes, ...
    out = rep.render(cameras, h, w, shading=..., light_positions=..., ambient=..., diffuse=..., generator=g,
                     albedo_grad=True)              # False (or per image, (B,) bool): the albedo is a constant of this render (it shapes only)
    terms = rep.regularizers(out)                   # unweighted; weighted by the stage's lambda_<name>
    rep.state_dict() / rep.load_state_dict(state)   # one layout on every device and backend
    rep.export_mesh(out_dir, export_cfg)            # textured mesh files

A stage may start from another stage's result (`from_previous` on the class that needs it, e.g.
the DMTet from the coarse NeRF's density and albedo).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from .cameras import Cameras
from .render.colour_gate import AlbedoGrad
from .render.renderer import RenderOutput


class Representation(ABC):
    bound: float  # the representation lives in [-bound, bound]^3

    @abstractmethod
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: [{"name": ..., "params": [...], "lr": ...}, ...] (names stay stable across runs)."""

    def set_step(self, step: int) -> None:
        """Move schedules to `step`, without randomness (called before each step and before saving)."""

    def prepare_step(self, step: int, generator: torch.Generator | None = None) -> None:
        """Everything before a training step's render: set_step, training mode, refreshes (may draw)."""
        self.set_step(step)
        self.train()

    def learning_rate_scales(self, step: int) -> dict[str, float]:
        """Factors on the groups' learning rates at `step`, by group name (phases: 0 freezes a group)."""
        return {}

    @abstractmethod
    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        shading: str = "albedo",
        light_positions: torch.Tensor | None = None,
        ambient: float = 0.1,
        diffuse: float = 0.9,
        generator: torch.Generator | None = None,
        albedo_grad: AlbedoGrad = True,
    ) -> RenderOutput:
        """Images of the representation seen by `cameras` (B), over its background; with albedo_grad
        False (for all, or per image as a (B,) bool tensor) the albedo enters the shaded colour as a
        constant, so no gradient from that image reaches the colour."""

    @abstractmethod
    def regularizers(self, out: RenderOutput) -> dict[str, torch.Tensor]:
        """Unweighted regularizer terms of one render, keyed like the stage config's lambda_<key>."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint must hold to rebuild this representation (device-independent)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of state_dict; raises KeyError / RuntimeError on a mismatching state."""

    @abstractmethod
    def train(self, mode: bool = True) -> "Representation":
        """Training mode (jittered samples, ...) or evaluation mode."""

    def eval(self) -> "Representation":
        return self.train(False)

    @abstractmethod
    def export_mesh(self, out_dir: str | Path, cfg: Any, progress: bool = True) -> Any:
        """Write the textured mesh files (export.ExportConfig in, export.ExportResult out)."""
