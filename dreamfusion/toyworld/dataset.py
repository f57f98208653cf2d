"""A seeded dataset of toy-world renders with captions and cameras, for training the bundled prior."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from tqdm import tqdm

from ..cameras import VIEW_LABELS, CameraConfig
from ..render.shading import LightConfig
from .scenes import ToyRenderConfig, render_random
from .vocabulary import ALL_SHAPES, COLOURS, caption

# The camera and light distributions shared by the prior's data and configs/toy.yaml's optimization.
TOY_CAMERAS = CameraConfig(elevation_range=(-10.0, 85.0), distance_range=(1.5, 2.0), fovy_range=(40.0, 60.0))
TOY_LIGHTS = LightConfig(position_perturb=0.5, ambient=0.3, diffuse=0.7)


@dataclass
class ToyDataset:
    images: torch.Tensor  # (N, 3, R, R) in [-1, 1]
    captions: list[str]  # "a red cube, front view" (the optimization always adds the view suffix)
    elevation: torch.Tensor  # (N,) degrees
    azimuth: torch.Tensor  # (N,) degrees
    shape_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    colour_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


def make_dataset(n_per_class: int, resolution: int, seed: int, progress: bool = True,
                 background_grey_range: tuple[float, float] = ToyRenderConfig.background_grey_range,
                 backdrops: dict[str, tuple[float, float]] | None = None) -> ToyDataset:
    """`n_per_class` renders of every (shape, colour), deterministic for a seed, over one uniform grey
    per image drawn from `background_grey_range`; a colour named in `backdrops` draws the second half
    of its images from its own grey range instead (white on greys it never blends into)."""
    gen = torch.Generator().manual_seed(seed)
    cfg = ToyRenderConfig(resolution=resolution, background_grey_range=tuple(background_grey_range))
    backdrops = backdrops or {}
    images, captions, els, azs, shapes, colours = [], [], [], [], [], []
    classes = [(s, c) for s in ALL_SHAPES for c in COLOURS]
    for si_ci in tqdm(classes, desc="rendering toy world", disable=not progress):
        shape, colour = si_ci
        own = n_per_class // 2 if colour in backdrops else 0
        parts = [(n_per_class - own, cfg)]
        if own:
            parts.append((own, replace(cfg, background_grey_range=tuple(backdrops[colour]))))
        for n, part_cfg in parts:
            img, _, cams = render_random(shape, colour, n, TOY_CAMERAS, part_cfg, TOY_LIGHTS, gen)
            images.append(img.permute(0, 3, 1, 2) * 2 - 1)
            for label in cams.view_labels():
                captions.append(f"{caption(colour, shape)}, {label} view")
            els.append(cams.elevation)
            azs.append(cams.azimuth)
        shapes += [ALL_SHAPES.index(shape)] * n_per_class
        colours += [list(COLOURS).index(colour)] * n_per_class
    assert all(label in VIEW_LABELS for label in VIEW_LABELS)
    return ToyDataset(torch.cat(images), captions, torch.cat(els), torch.cat(azs), torch.tensor(shapes), torch.tensor(colours))
