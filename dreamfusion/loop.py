"""What every stage's training loop reads: its length, batch and render size, shading, cadence,
and the scalar schedules its weights follow. The coarse NeRF stage (run_config.TrainConfig) and the
fine DMTet stage (dmtet.config.FineTrainConfig) extend LoopConfig with their own rates and weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .config import ConfigError, key_of, require_nonnegative, require_positive


@dataclass
class Schedule:
    """A scalar that moves linearly from `start` to `end` between steps `begin` and `finish`."""

    start: float = 0.0
    end: float = 0.0
    begin: int = 0
    finish: int = 0

    def __call__(self, step: int) -> float:
        if self.finish <= self.begin or step >= self.finish:
            return self.end if step >= self.begin else self.start
        if step <= self.begin:
            return self.start
        f = (step - self.begin) / (self.finish - self.begin)
        return self.start + f * (self.end - self.start)


def constant(value: float) -> Schedule:
    return Schedule(value, value, 0, 0)


@dataclass
class LoopConfig:
    """What the training loop of every stage reads: length, batch, render size, shading, cadence."""

    steps: int = 1000
    batch_size: int = 1
    resolution: int = 64  # render height = width
    ambient_only_steps: int = 100  # warm-up: albedo lit by ambient light only
    lambertian_prob: float = 0.75  # after warm-up: shaded with this probability ...
    textureless_prob: float = 0.5  # ... of which textureless with this probability
    # Whether lambertian renders teach colour too (DreamFusion: yes). A NeRF's density gradient is
    # speckled at the hash grid's finer levels, and the prior explains speckled shading as a darker,
    # duller albedo: with false, lit renders shape the geometry and only albedo renders the colour.
    lit_colour_gradient: bool = True
    # Renders scored at an SDS timestep above this fraction of the schedule do not teach colour (they
    # still shape the geometry); 1: every timestep does. The prior reads an albedo render's flat
    # colour as a lit object's at mid and large t and pulls it darker: over t in [0.02, 0.5] the
    # green sphere's albedo has only a sliver of brightness around the palette's that it is not
    # pulled down from, over [0.02, 0.25] a wide one (docs/toy-world.md, "The dark spheres").
    colour_t_max: Schedule = field(default_factory=lambda: constant(1.0))
    # The networks' arithmetic: fp32, or autocast to bf16 / fp16 (CUDA; fp16 with a gradient scaler);
    # auto = bf16 on a CUDA GPU that supports it, else fp32. The guidance keeps guidance.dtype.
    field_precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    # A factor on every learning rate of the stage. Adam takes steps of about the rate whatever the
    # size of the gradient, so SDS's noise walks a finished asset away (the true cube turns to fog in
    # 300 coarse steps at the full rate: scripts/fixed_point.py); decaying the rate lets it settle.
    lr_scale: Schedule = field(default_factory=lambda: constant(1.0))
    # A factor on the guidance's CFG scale, step by step (1: the guidance's own scale). For
    # experiments: with the bundled prior a strong scale keeps white objects that scale 4 fades, but
    # bends every other asset's faces, and decaying it after the shape forms lost the white cube
    # again (docs/toy-world.md, "A strong guidance in the coarse stage"), so no recipe sets it.
    guidance_scale_factor: Schedule = field(default_factory=lambda: constant(1.0))
    max_nonfinite_in_a_row: int = 20
    checkpoint_every: int = 250
    validation_every: int = 100

    def validate(self, prefix: str = "") -> None:
        for name in ("steps", "batch_size", "resolution", "checkpoint_every", "validation_every", "max_nonfinite_in_a_row"):
            require_positive(prefix, name, getattr(self, name))
        require_nonnegative(prefix, "ambient_only_steps", self.ambient_only_steps)
        require_nonnegative(prefix, "lr_scale.start", self.lr_scale.start)
        require_nonnegative(prefix, "lr_scale.end", self.lr_scale.end)
        require_nonnegative(prefix, "guidance_scale_factor.start", self.guidance_scale_factor.start)
        require_nonnegative(prefix, "guidance_scale_factor.end", self.guidance_scale_factor.end)
        for end in ("start", "end"):
            if not 0.0 < getattr(self.colour_t_max, end) <= 1.0:
                raise ConfigError(f"{key_of(prefix, 'colour_t_max.' + end)} must be in (0, 1], got {getattr(self.colour_t_max, end)}")
        for name in ("lambertian_prob", "textureless_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{key_of(prefix, name)} must be in [0, 1], got {getattr(self, name)}")


