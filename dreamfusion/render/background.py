"""Backgrounds: a small MLP of the view direction, or a solid / random colour.

The MLP lets the optimizer put scenery at infinity instead of floaters in the box; a random colour
per image does the opposite and forces the object to be opaque where it is drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import ConfigError, key_of
from ..utils import random


@dataclass
class BackgroundConfig:
    type: Literal["mlp", "solid", "random", "random_grey"] = "mlp"
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)  # for 'solid'
    grey_range: tuple[float, float] = (0.3, 0.9)  # for 'random_grey': the toy priors' training greys (configs/toy*.yaml)
    n_frequencies: int = 2  # direction encoding of the MLP
    hidden_dim: int = 16

    def validate(self, prefix: str = "") -> None:
        if not all(0.0 <= c <= 1.0 for c in self.color):
            raise ConfigError(f"{key_of(prefix, 'color')} must be three values in [0, 1], got {list(self.color)}")
        if self.n_frequencies < 0 or self.hidden_dim <= 0:
            raise ConfigError(f"{key_of(prefix, 'hidden_dim')} must be positive and n_frequencies >= 0")


class Background(nn.Module):
    def __init__(self, cfg: BackgroundConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("color", torch.tensor(cfg.color, dtype=torch.float32), persistent=False)
        if cfg.type == "mlp":
            in_dim = 3 + 6 * cfg.n_frequencies
            self.net = nn.Sequential(nn.Linear(in_dim, cfg.hidden_dim), nn.ReLU(inplace=True), nn.Linear(cfg.hidden_dim, 3))

    def encode(self, dirs: torch.Tensor) -> torch.Tensor:
        feats = [dirs]
        for k in range(self.cfg.n_frequencies):
            feats += [torch.sin((2.0**k) * torch.pi * dirs), torch.cos((2.0**k) * torch.pi * dirs)]
        return torch.cat(feats, dim=-1)

    def forward(self, dirs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Colours (B, H, W, 3) for view directions (B, H, W, 3)."""
        if self.cfg.type == "mlp":
            return torch.sigmoid(self.net(self.encode(dirs)))
        if self.cfg.type in ("random", "random_grey"):
            b = dirs.shape[0]
            if self.cfg.type == "random":
                c = random.rand((b, 1, 1, 3), generator, dirs.device, dirs.dtype)
            else:
                lo, hi = self.cfg.grey_range
                c = (lo + (hi - lo) * random.rand((b, 1, 1, 1), generator, dirs.device, dirs.dtype)).expand(b, 1, 1, 3)
            return c.expand_as(dirs)
        return self.color.to(dirs).expand_as(dirs)
