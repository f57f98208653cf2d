"""What the trainer, the stages and the exporters need of a 3D representation, and nothing more.

A representation is whatever can be rendered from cameras, regularized, checkpointed and exported:
the coarse stage's NeRF (scene.Scene), the fine stage's DMTet (dmtet/scene.DMTetScene) and 3D
Gaussians (gaussians/scene.GaussianScene). The training loop (train.py), the stages (stages.py)
and the workspace only ever call these methods, and find a representation by its name in the
registry (registry.py), so a new representation is one package and one registry line:

    rep = Rep.build(run_config, device)             # a stage's start, from the run config
    rep = Rep.from_previous(other, run_config, device)  # or from the previous stage's result
    rep = Rep.from_checkpoint(run_config, state, device)  # or from a checkpoint (its size may differ from build's)
    rep = Rep.from_surface(run_config, points, normals, albedo, device)  # or holding a given surface (the fixed point's truth)
    groups = rep.parameter_groups()                 # named optimizer groups with their learning rates
    rep.set_precision(dtype)                        # mixed precision (train.field_precision): None is fp32
    rep.prepare_step(step, generator)               # schedules (set_step), occupancy refreshes, ...
    out = rep.render(cameras, h, w, shading=..., light_positions=..., ambient=..., diffuse=..., generator=g,
                     albedo_grad=True)              # False (or per image, (B,) bool): the albedo is a constant of this render (it shapes only)
    terms = rep.regularizers(out)                   # unweighted; weighted by the stage's lambda_<name>
    rep.after_step(out, optimizer, step)            # after the optimizer's step: densify, prune (may swap parameters)
    rep.state_dict() / rep.load_state_dict(state)   # one layout on every device and backend
    rep.metrics()                                   # its own figures for the metrics line
    rep.volume()                                    # density and albedo queries (hand-over, field turntable), or None
    rep.export_mesh(out_dir, export_cfg)            # textured mesh files
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from .cameras import Cameras
from .config import ConfigError
from .render.colour_gate import AlbedoGrad

if TYPE_CHECKING:
    from .run_config import RunConfig


class RepresentationError(ConfigError):
    """A representation cannot be built as asked (e.g. it cannot start from the previous stage's)."""


@dataclass
class RenderOutput:
    """Images of a batch of cameras, and what a representation's regularizers read of the render."""

    rgb: torch.Tensor  # (B, H, W, 3) shaded and composited over the background
    opacity: torch.Tensor  # (B, H, W, 1)
    depth: torch.Tensor  # (B, H, W, 1) expected distance along the ray (0 where empty)
    normal: torch.Tensor  # (B, H, W, 3) composited world normals (zeros where empty)
    albedo: torch.Tensor  # (B, H, W, 3) composited albedo, unshaded, no background
    # Per-sample values of a volume render (packed, N samples) for its regularizers; None otherwise.
    weights: torch.Tensor | None = None  # (N,)
    ray_indices: torch.Tensor | None = None  # (N,) into the flattened B*H*W rays
    sample_normals: torch.Tensor | None = None  # (N, 3)
    sample_predicted_normals: torch.Tensor | None = None  # (N, 3)
    sample_dirs: torch.Tensor | None = None  # (N, 3) unit view directions
    sample_t: torch.Tensor | None = None  # (N,) distance of each sample along its ray
    extras: dict = field(default_factory=dict)  # what a representation's own regularizers and hooks read (e.g. the mesh)


class Volume(Protocol):
    """Point queries of a representation as a volume: what the marching-cubes export, the field
    turntable's voxel cache and the fine stage's hand-over read."""

    def density(self, x: torch.Tensor) -> torch.Tensor: ...  # (N, 3) world -> (N,) volume density

    def albedo(self, x: torch.Tensor) -> torch.Tensor: ...  # (N, 3) world -> (N, 3) in [0, 1]


class Representation(ABC):
    bound: float  # the representation lives in [-bound, bound]^3
    autocast_dtype: torch.dtype | None = None  # set_precision's dtype; None: fp32
    # The dataclass of its options under the run config's `representation:` section (None: it takes none)
    options_type: ClassVar[type | None] = None

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def build(cls, cfg: "RunConfig", device: torch.device | str) -> "Representation":
        """The start of a stage that trains this representation from nothing (seeded by cfg.seed)."""

    @classmethod
    def from_previous(cls, previous: "Representation", cfg: "RunConfig", device: torch.device | str) -> "Representation":
        """The start of a stage that continues the previous stage's result (Magic3D's hand-over)."""
        raise RepresentationError(f"{cls.__name__} cannot start from a {type(previous).__name__}")

    @classmethod
    def from_surface(cls, cfg: "RunConfig", points: torch.Tensor, normals: torch.Tensor, albedo: torch.Tensor,
                     device: torch.device | str) -> "Representation":
        """One that holds a given surface: points spread evenly over it in random order (N, 3; any
        prefix is an even subset), unit outward normals (N, 3) and the albedo there (N, 3). The
        fixed point's start from the true toy object (eval/fixed_point.py); RepresentationError
        where a representation has no such start."""
        raise RepresentationError(f"{cls.__name__} cannot start from a given surface")

    @classmethod
    def blank(cls, cfg: "RunConfig", device: torch.device | str) -> "Representation":
        """One of the right kind to load a checkpoint into (its values are overwritten)."""
        return cls.build(cfg, device)

    @classmethod
    def from_checkpoint(cls, cfg: "RunConfig", state: dict[str, Any], device: torch.device | str) -> "Representation":
        """The representation a checkpoint's state holds (KeyError / RuntimeError when it does not
        match the config). A representation whose size changes in training resizes in load_state_dict."""
        rep = cls.blank(cfg, device)
        rep.load_state_dict(state)
        return rep

    # ---- training ------------------------------------------------------------------------------------

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

    def set_precision(self, dtype: torch.dtype | None) -> None:
        """The arithmetic of the representation's networks (train.field_precision); None is fp32.
        Renders still composite in fp32."""
        self.autocast_dtype = dtype

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

    def after_step(self, out: RenderOutput, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Called after the optimizer's step (`step` steps done; the gradients are still there) and
        only for steps with a finite loss. A representation whose parameters change here (3D
        Gaussians densify and prune) swaps them in the optimizer's groups, with their moments
        (utils/optimizer_surgery.py)."""

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

    def metrics(self) -> dict[str, float]:
        """Figures of the representation itself for each step's metrics line (e.g. the Gaussians' count)."""
        return {}

    def volume(self) -> Volume | None:
        """The representation as density and albedo queries, or None when it is no volume (a mesh)."""
        return None

    @abstractmethod
    def export_mesh(self, out_dir: str | Path, cfg: Any, progress: bool = True) -> Any:
        """Write the textured mesh files (export.ExportConfig in, export.ExportResult out)."""
