"""The truth as a fixed point: start a stage from the true toy object and measure what moves it.

A perfect asset should stay perfect under its own prompt. This builds the true object in a stage's
own representation — the coarse NeRF regressed onto the toy SDF (a sharp density shell) and the
palette albedo, or 3D Gaussians as surfels on the true surface; the fine DMTet with the true SDF
on its grid and that NeRF as its texture field — exports and judges it, runs the stage's SDS
with the run's recipe for some steps, and judges it again. The drift of colour (ΔE), surface distance, normal angle and genus is a defect of the
pipeline: a mismatch between our renders and the prior's training renders, a guidance setting, a
learning rate. Where it starts: by default the last `steps` steps of the stage, so the schedules
(t range, blob, regularizer weights) are those that finish an asset.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..render.volume import SURFACE_OPTICAL_DEPTH
from ..representation import Representation
from ..run_config import RunConfig
from ..toyworld.scenes import albedo as true_albedo, sdf as true_sdf
from ..utils import random

# The budget for 300 steps from the truth; `check` fails a report beyond it.
TOLERANCES = {"delta_e": 3.0, "surface_distance": 0.005, "normal_angle": 3.0}
TRUE_SURFACE_POINTS = 20000  # on the true surface, for a representation's from_surface (it takes what it needs)
MEASURES = ("delta_e", "delta_lightness", "delta_chroma", "surface_distance", "normal_angle", "genus")


@dataclass
class FixedPointReport:
    prompt: str
    stage: str
    start_step: int
    steps: int
    before: dict[str, float]  # the judge's figures of the true object as this stage represents it
    after: dict[str, float]  # ... after `steps` steps of the stage's SDS
    drift: dict[str, float] = field(default_factory=dict)  # after - before (genus: the change)
    seconds: float = 0.0
    error: str | None = None  # the stage lost its surface (nothing to judge after the steps)

    def failures(self, tolerances: dict[str, float] | None = None) -> list[str]:
        """What moved beyond the tolerances (absolute drift), and a changed genus, as sentences."""
        if self.error is not None:
            return [f"the stage lost the object: {self.error}"]
        tol = TOLERANCES if tolerances is None else tolerances
        out = [f"{k} drifted by {self.drift[k]:+.4g} (allowed ±{v:g})" for k, v in tol.items()
               if not abs(self.drift.get(k, 0.0)) <= v]  # NaN fails too
        if self.before.get("genus") != self.after.get("genus"):
            out.append(f"genus changed from {self.before.get('genus')} to {self.after.get('genus')}")
        return out


# ---- the true object in each representation ------------------------------------------------------

def toy_truth(prompt: str) -> tuple[str, str]:
    """(shape, colour) of a toy-world prompt; ConfigError for any other: only its truth is known."""
    from .toy import parse_toy_prompt

    try:
        return parse_toy_prompt(prompt)
    except ValueError as err:
        raise ConfigError(f"{err}: checks against the truth need a toy-world prompt, whose true object is known") from None


def true_density(sdf: torch.Tensor, density: float = 60.0, sharpness: float = 0.015,
                 skin_depth: float | None = SURFACE_OPTICAL_DEPTH) -> torch.Tensor:
    """The density of the true object as a NeRF holds it: `density` * sigmoid(-(sdf + shift) /
    sharpness), an opaque shell within a fraction of a render step.

    `shift` puts the shell's skin, where a head-on ray's optical depth reaches `skin_depth` (where
    meshes are placed and a render's silhouette lies), on the true surface: a head-on ray has
    density * sharpness * ln(1 + exp(-shift / sharpness)) of it in front of the surface. Unshifted,
    the true torus was meshed 0.023 from the truth, with a fat tube. None: no shift (the shell
    centred on the surface)."""
    shift = 0.0 if skin_depth is None else -sharpness * math.log(math.expm1(skin_depth / (density * sharpness)))
    return density * torch.sigmoid(-(sdf + shift) / sharpness)


def fit_true_field(field_: torch.nn.Module, shape: str, colour: str, steps: int = 600, density: float = 60.0,
                   sharpness: float = 0.015, seed: int = 0, batch: int = 8192,
                   skin_depth: float | None = SURFACE_OPTICAL_DEPTH) -> float:
    """Regress a NeRFField onto the toy object (true_density) and its true albedo. Returns the last loss."""
    gen = torch.Generator().manual_seed(seed)
    device = next(field_.parameters()).device
    bound = field_.cfg.bound
    opt = torch.optim.Adam(field_.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    loss = torch.zeros(())
    for step in range(steps):
        box = (random.rand((batch, 3), gen) * 2 - 1) * bound
        near = box[: batch // 2] * 0.7  # half the points near the object, where the surface is
        p = torch.cat([box[batch // 2:], near]).to(device)
        d = true_sdf(shape, p.cpu()).to(device)
        target_sigma = true_density(d, density, sharpness, skin_depth)
        out = field_(p)
        # log-density error (inside and outside matter alike) + albedo, weighted toward the surface
        sigma_loss = (torch.log1p(out.density) - torch.log1p(target_sigma)).square().mean()
        near_surface = torch.exp(-(d / 0.05).square())
        # cross-entropy, not squared error: its gradient on the logit is (albedo - target), so a
        # channel the early steps push into the sigmoid's flat end still comes back
        target_albedo = true_albedo(shape, colour, p.cpu()).to(device)
        albedo_loss = (near_surface[:, None] * F.binary_cross_entropy(out.albedo, target_albedo, reduction="none")).mean()
        loss = sigma_loss + 10.0 * albedo_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == steps * 2 // 3:
            for g in opt.param_groups:
                g["lr"] = 3e-3
    return float(loss.detach())


def true_coarse_scene(cfg: RunConfig, shape: str, colour: str, device: torch.device, start_step: int, fit_steps: int = 600):
    """The coarse stage's representation holding the true object, with the run's schedules as of
    `start_step`: a NeRF regressed onto the true density and albedo, any other one built by its
    from_surface from points on the true surface (3D Gaussians: surfels). ConfigError where the
    representation has no such start."""
    from ..representation import RepresentationError
    from ..scene import Scene, build_scene
    from .geometry import true_normal, true_surface

    cls, _ = cfg.representation_options()
    if not issubclass(cls, Scene):
        points = torch.from_numpy(true_surface(shape, TRUE_SURFACE_POINTS).copy())
        normals = torch.from_numpy(true_normal(shape, points.numpy()))
        try:
            rep = cls.from_surface(cfg, points.float(), normals.float(), true_albedo(shape, colour, points).float(), device)
        except RepresentationError as err:
            raise ConfigError(f"the coarse stage ({cfg.representation['type']!r}) has no start from the true object ({err}): "
                              "check its fine stage with --stage fine") from None
        rep.set_step(start_step)
        return rep
    scene = build_scene(cfg, device=device, seed=cfg.seed)
    scene.schedule = cfg.train
    scene.set_step(start_step)  # the blob and active levels the field is fitted under
    fit_true_field(scene.field, shape, colour, steps=fit_steps, seed=cfg.seed)
    scene.renderer.update_occupancy(10**9)  # a full refresh (past the warm-up) of the true field
    return scene


def true_fine_scene(cfg: RunConfig, shape: str, colour: str, device: torch.device, fit_steps: int = 600):
    """The fine DMTet holding the true object: the true SDF on its grid, a NeRF fitted to the
    truth as its texture field (as the hand-over copies the coarse field)."""
    from ..dmtet.grid import tet_grid
    from ..dmtet.scene import DMTetScene
    from ..field.nerf import NeRFField
    from ..render.background import Background

    if cfg.fine is None:
        raise ConfigError("this config has no fine: section, so it has no fine stage to check")

    colour_field = NeRFField(cfg.field, device=device, seed=cfg.seed + 1)
    colour_field.blob_scale, colour_field.active_levels = 0.0, None  # as fine_scene_from_coarse reads it
    fit_true_field(colour_field, shape, colour, steps=fit_steps, seed=cfg.seed, skin_depth=None)  # only its albedo is read
    d = cfg.fine.dmtet
    grid = tet_grid(d.resolution, cfg.field.bound)
    base = true_sdf(shape, grid.vertices.cpu()).float()
    return DMTetScene(d, cfg.fine.train, colour_field.train(), Background(cfg.background).to(device), base,
                      cfg.field.bound, device, cfg.camera.elevation_range)


# ---- judging ---------------------------------------------------------------------------------------

def judge_representation(rep: Representation, cfg: RunConfig, out_dir: Path, prompt: str) -> dict[str, float]:
    """Export the representation's mesh into out_dir and judge it against the true object."""
    from .toy import evaluate_mesh

    shape, colour = toy_truth(prompt)
    rep.export_mesh(out_dir, cfg.mesh_export_config(), progress=False)
    result = asdict(evaluate_mesh(out_dir, shape, colour))
    return {k: result[k] for k in MEASURES}


def run_fixed_point(cfg: RunConfig, stage: str, steps: int, out_dir: str | Path, device: torch.device | str = "cpu",
                    start_step: int | None = None, guidance=None, fit_steps: int = 600) -> FixedPointReport:
    """Start `stage` ("coarse" or "fine") of the run config from the true object of its toy prompt,
    run `steps` steps of its SDS from `start_step` (default: the stage's last `steps` steps) and
    report the judge's figures before and after. `guidance`: a prepared one to reuse (else loaded);
    `fit_steps`: of the regression that puts the truth into the representation."""
    from ..dmtet.scene import EmptySurfaceError
    from ..export import ExportError
    from ..guidance import make_guidance
    from ..stages import stage_guidance
    from ..train import Stage, Trainer
    from ..workspace import Workspace
    started = time.perf_counter()
    if stage not in ("coarse", "fine"):
        raise ConfigError(f"--stage must be coarse or fine, got {stage!r}")
    shape, colour = toy_truth(cfg.prompt)
    device = torch.device(device)
    loop = cfg.train if stage == "coarse" else (cfg.fine.train if cfg.fine is not None else None)
    if loop is None:
        raise ConfigError("this config has no fine: section, so it has no fine stage to check")
    start = max(loop.steps - steps, 0) if start_step is None else start_step
    if steps <= 0 or start < 0:
        raise ConfigError(f"--steps must be positive and --start-step non-negative, got {steps} and {start}")
    out = Path(out_dir)
    if guidance is None:
        guidance = make_guidance(cfg.guidance, device)
        guidance.prepare(cfg.prompt, cfg.negative_prompt or None)
    if stage == "coarse":
        rep = true_coarse_scene(cfg, shape, colour, device, start, fit_steps)
    else:
        rep = true_fine_scene(cfg, shape, colour, device, fit_steps)
        guidance = stage_guidance(guidance, cfg, device)
    before = judge_representation(rep, cfg, out / "before", cfg.prompt)
    loop = copy.deepcopy(loop)
    loop.steps = start + steps
    loop.checkpoint_every = loop.validation_every = start + steps  # one strip and one checkpoint, at the end
    trainer = Trainer(Stage(stage, rep, loop, cfg.camera, cfg.light, cfg.seed, {}), Workspace(out / "run"), device, guidance)
    trainer.step = start
    trainer.validate()  # the strip of the truth, beside the one at the end
    try:
        trainer.run()
        after, error = judge_representation(rep, cfg, out / "after", cfg.prompt), None
    except (ExportError, EmptySurfaceError) as err:  # the SDS emptied the field or the DMTet: a drift too
        after, error = {}, str(err)
    drift = {k: float(after[k]) - float(before[k]) for k in MEASURES if after.get(k) is not None and before.get(k) is not None}
    report = FixedPointReport(cfg.prompt, stage, start, steps, before, after, drift, time.perf_counter() - started, error)
    (out / "fixed_point.json").write_text(json.dumps(asdict(report), indent=1), encoding="utf-8")
    return report
