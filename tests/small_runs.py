"""Overrides that make a whole run take a second or two in tests: `small_run` for both stages of
the default recipe (3D Gaussians, then the DMTet), `nerf_small_run` for the NeRF recipe (pass
`NERF_RECIPE`, its --config, beside it), `FINE_SMALL` for the fine stage alone (a 24^3 DMTet, 16x16
renders, 4 steps, and the run's own test prior instead of the bundled latent one)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NERF_CONFIG = REPO / "configs" / "toy.yaml"  # the NeRF recipe: for tests of the NeRF's own behaviour
NERF_RECIPE = ["--config", str(NERF_CONFIG)]
# a few hundred Gaussians and a 48^3 density grid (the export's and hand-over's), for the default recipe
GAUSSIANS_SMALL = ["representation.num_points=300", "representation.max_gaussians=600", "representation.volume_resolution=48"]

FINE_SMALL = [
    "fine.guidance={t_range: [0.02, 0.5], t_max_schedule: null}",  # refine with the run's own (test) prior
    "fine.dmtet.resolution=24", "fine.dmtet.init_close=1", "fine.dmtet.init_smooth=0.5", "fine.train.steps=4",
    "fine.train.resolution=16", "fine.train.batch_size=1", "fine.train.checkpoint_every=2", "fine.train.validation_every=2",
]


def nerf_small_run(prior: str | Path, steps: int, *extra: str) -> list[str]:
    """Both stages in a second: 16x16 renders, 16 samples a ray, a small hash grid, tiny exports
    (overrides any toy recipe accepts: the Gaussian one keeps a field for the DMTet's colour)."""
    return [
        f"guidance.model={prior}", "guidance.embedding_cache=null", f"train.steps={steps}", "train.batch_size=1",
        "train.resolution=16", "render.n_samples=16", "field.encoding.n_levels=4", "field.encoding.log2_hashmap_size=12",
        "train.validation_every=4", "train.checkpoint_every=4", "train.ambient_only_steps=2",
        "export.mesh_resolution=48", "export.texture_size=32", "export.video_frames=2", "export.video_resolution=32", *FINE_SMALL,
        *extra,
    ]


def small_run(prior: str | Path, steps: int, *extra: str) -> list[str]:
    """The default recipe's run in a few seconds: nerf_small_run's sizes and a few hundred Gaussians."""
    return nerf_small_run(prior, steps, *GAUSSIANS_SMALL, *extra)
