"""GuidanceConfig: which prior scores the renders, and how SDS uses it."""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..config import ConfigError, key_of

# Recipe defaults for the CFG scale when `guidance_scale` is left unset: DreamFusion/stable-dreamfusion
# use 100 with Stable Diffusion, threestudio uses 20 with DeepFloyd IF. For Stable Diffusion 3 (flow)
# no peer has a tuned value; 30 is a starting point, not a measured one.
DEFAULT_GUIDANCE_SCALE = {"latent": 100.0, "pixel": 20.0, "flow": 30.0}

Distillation = Literal["sds", "csd", "nfsd", "ism", "vsd"]


@dataclass
class NFSDConfig:
    """Noise-free score distillation (Katzir et al., arXiv 2310.17590)."""

    small_t: float = 0.2  # below this fraction of T the domain term is eps(x_t; empty) alone (the paper's t < 200)

    def validate(self, prefix: str = "") -> None:
        if not 0.0 < self.small_t < 1.0:
            raise ConfigError(f"{key_of(prefix, 'small_t')} must lie inside (0, 1), got {self.small_t}")


@dataclass
class ISMConfig:
    """Interval score matching (LucidDreamer, arXiv 2311.11284): x_s by DDIM inversion, x_t one step on."""

    interval: float = 0.08  # t - s as a fraction of T (the paper's delta_T = 80 of 1000)
    inversion_stride: float = 0.2  # the inversion from x_0 to x_s moves this far a step (xs_delta_t = 200) ...
    inversion_steps: int = 5  # ... and takes at most this many (xs_inv_steps)

    def validate(self, prefix: str = "") -> None:
        for name in ("interval", "inversion_stride"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"{key_of(prefix, name)} must lie inside (0, 1), got {getattr(self, name)}")
        if self.inversion_steps < 1:
            raise ConfigError(f"{key_of(prefix, 'inversion_steps')} must be >= 1, got {self.inversion_steps}")


@dataclass
class VSDConfig:
    """Variational score distillation (ProlificDreamer, arXiv 2305.16213): the online score model phi."""

    model: Literal["copy", "lora"] = "copy"  # copy: every weight of a copy of the U-Net trains (small priors); lora: LoRA layers on it
    lora_rank: int = 4
    lr: float = 1e-4  # phi's own Adam
    camera_dropout: float = 0.1  # phi's training sees no camera this often, as ProlificDreamer's
    train_t_range: tuple[float, float] = (0.0, 1.0)  # phi learns the renders' score at every noise level
    train_every: int = 1  # phi takes an Adam step on every n-th step's renders (1: every step, as the paper)

    def validate(self, prefix: str = "") -> None:
        if self.lora_rank < 1:
            raise ConfigError(f"{key_of(prefix, 'lora_rank')} must be >= 1, got {self.lora_rank}")
        if not self.lr > 0:
            raise ConfigError(f"{key_of(prefix, 'lr')} must be positive, got {self.lr}")
        if self.train_every < 1:
            raise ConfigError(f"{key_of(prefix, 'train_every')} must be >= 1, got {self.train_every}")
        if not 0.0 <= self.camera_dropout < 1.0:
            raise ConfigError(f"{key_of(prefix, 'camera_dropout')} must lie in [0, 1), got {self.camera_dropout}")
        lo, hi = self.train_t_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"{key_of(prefix, 'train_t_range')} must be [min, max] within [0, 1], got {list(self.train_t_range)}")


@dataclass
class GuidanceConfig:
    type: Literal["pixel", "latent", "flow"] = "pixel"  # flow: Stable Diffusion 3.x (rectified flow)
    model: str = ""  # Hub id or local diffusers folder
    guidance_scale: float | None = None  # None: 100 for latent (SD), 20 for pixel (IF), 30 for flow (SD3)
    resolution: int | None = None  # side the renders are resized to for the prior; None: the model's own
    t_range: tuple[float, float] = (0.02, 0.98)  # fractions of the training timesteps
    t_max_schedule: tuple[float, int] | None = None  # (final t_max, steps): lower t_max linearly over the run
    weighting: Literal["sds", "uniform", "fantasia3d"] = "sds"
    # the rule that turns the prior's prediction into a gradient (sds.py): every one is
    # w(t) (eps_cfg(x_t; y) - baseline), and they differ in the baseline
    distillation: Distillation = "sds"
    nfsd: NFSDConfig = field(default_factory=NFSDConfig)
    ism: ISMConfig = field(default_factory=ISMConfig)
    vsd: VSDConfig = field(default_factory=VSDConfig)
    grad_clip: float | None = None  # clamp each entry of the SDS gradient to [-c, c]
    view_prompt: Literal["nearest", "interpolate", "none"] = "nearest"
    negative_prompt: str = ""
    perp_neg: bool = False
    perp_neg_weight: float = -2.0  # how hard Perp-Neg pushes away from the other views (0 .. -4)
    perp_neg_front_decay: float = 2.0
    perp_neg_side_decay: float = 10.0
    camera_conditioning: bool = True  # only used when the U-Net declares a camera input
    embedding_cache: str | None = "~/.cache/dreamfusion/embeddings"  # None: keep embeddings in memory only
    cache_dir: str | None = None  # Hugging Face cache; None: HF_HOME / HF_HUB_CACHE defaults
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    # CUDA memory options (ignored on CPU)
    attention: Literal["sdpa", "sliced"] = "sdpa"
    channels_last: bool = True
    release_text_encoder: bool = True  # free the text encoder once embeddings exist (reloaded if needed)

    def validate(self, prefix: str = "") -> None:
        if self.guidance_scale is not None and self.guidance_scale < 0:
            raise ConfigError(f"{key_of(prefix, 'guidance_scale')} must be >= 0, got {self.guidance_scale}")
        if self.resolution is not None and (self.resolution <= 0 or self.resolution % 16):
            raise ConfigError(f"{key_of(prefix, 'resolution')} must be a positive multiple of 16 (or null: the model's own), "
                              f"got {self.resolution}")
        t_min, t_max = self.t_range
        if not (0.0 < t_min < 1.0 and 0.0 < t_max < 1.0):
            raise ConfigError(f"{key_of(prefix, 't_range')} must lie inside (0, 1), got {list(self.t_range)}")
        if t_min > t_max:
            raise ConfigError(f"{key_of(prefix, 't_range')} is reversed: [min, max] expected, got {list(self.t_range)}")
        if self.t_max_schedule is not None:
            final, steps = self.t_max_schedule
            if not t_min <= final <= t_max:
                raise ConfigError(
                    f"{key_of(prefix, 't_max_schedule')}: the final t_max {final} must lie within t_range {list(self.t_range)}"
                )
            if steps <= 0:
                raise ConfigError(f"{key_of(prefix, 't_max_schedule')}: the number of steps must be positive, got {steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"{key_of(prefix, 'grad_clip')} must be positive (or null for no clipping), got {self.grad_clip}")
        if self.perp_neg and self.view_prompt == "none":
            raise ConfigError(f"{key_of(prefix, 'perp_neg')} needs view-dependent prompts; set view_prompt to nearest or interpolate")
        if self.distillation not in typing.get_args(Distillation):
            raise ConfigError(f"{key_of(prefix, 'distillation')} must be one of {', '.join(typing.get_args(Distillation))}, "
                              f"got {self.distillation!r}")
        for name in ("nfsd", "ism", "vsd"):
            getattr(self, name).validate(key_of(prefix, name))
        if self.perp_neg_weight > 0:
            raise ConfigError(f"{key_of(prefix, 'perp_neg_weight')} must be <= 0 (it pushes away from other views), got {self.perp_neg_weight}")
        for name in ("perp_neg_front_decay", "perp_neg_side_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{key_of(prefix, name)} must be >= 0, got {getattr(self, name)}")

    @property
    def scale(self) -> float:
        """The CFG scale in effect."""
        return DEFAULT_GUIDANCE_SCALE[self.type] if self.guidance_scale is None else self.guidance_scale

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return getattr(torch, self.dtype)
