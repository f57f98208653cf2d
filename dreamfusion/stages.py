"""The stages of a run and how each one starts: which representation it trains, with which loop.

* coarse: DreamFusion's NeRF (scene.Scene) from the density blob, trained with `train:`;
* fine: Magic3D's DMTet (dmtet.scene.DMTetScene) from the coarse NeRF's cleaned level set and
  albedo, trained with `fine.train:` (and `fine.guidance:` over the run's guidance).

A stage that resumes, or a workspace that is only exported, rebuilds its representation from the
config and loads the checkpoint: the fine stage needs no coarse run for that.
"""
from __future__ import annotations


import torch

from .cameras import CameraConfig
from .config import to_dict
from .render.background import Background
from .run_config import RunConfig
from .scene import Scene, build_scene
from .train import Stage

STAGES = ("coarse", "fine")


def coarse_stage(cfg: RunConfig, device: torch.device | str) -> Stage:
    """The NeRF stage of a run config (DreamFusion's whole recipe)."""
    scene = build_scene(cfg, device=device, seed=cfg.seed)  # RunConfig extends SceneConfig
    scene.schedule = cfg.train
    return Stage("coarse", scene, cfg.train, cfg.camera, cfg.light, cfg.seed, to_dict(cfg))


def fine_stage(cfg: RunConfig, device: torch.device | str, coarse: Scene | None = None) -> Stage:
    """The DMTet stage; from the trained `coarse` scene, or blank (to load a fine checkpoint into)."""
    from .dmtet.scene import blank_fine_scene, fine_scene_from_coarse

    if cfg.fine is None:
        raise ValueError("this run config has no fine: section")
    f = cfg.fine
    if coarse is not None:
        rep = fine_scene_from_coarse(f.dmtet, f.train, coarse.field, coarse.background, device, cfg.seed,
                                     cfg.camera.elevation_range)
    else:
        rep = blank_fine_scene(f.dmtet, f.train, cfg.field, Background(cfg.background).to(device), cfg.field.bound, device,
                               cfg.camera.elevation_range)
    return Stage("fine", rep, f.train, cfg.camera, cfg.light, cfg.seed, to_dict(cfg))


def stage_guidance(guidance, cfg: RunConfig, device: torch.device):
    """The guidance of the fine stage: the coarse stage's model with fine.guidance's settings (sharing
    the loaded networks and embeddings), or another model when fine.guidance names one."""
    from .guidance import make_guidance

    fine_cfg = cfg.fine_guidance()
    same_model = all(getattr(fine_cfg, k) == getattr(cfg.guidance, k) for k in ("type", "model", "dtype", "cache_dir"))
    if same_model:
        return guidance.with_config(fine_cfg)
    fine = make_guidance(fine_cfg, device)
    fine.prepare(cfg.prompt, cfg.negative_prompt or None)
    return fine


def load_stage(ws, stage: str | None = None, device: torch.device | str = "cpu", checkpoint=None):
    """(representation with its trained weights, stage name) of a workspace: the final stage by
    default, for export and video. The fine stage is rebuilt from config.yaml alone."""
    from .checkpoint import CheckpointError, load_checkpoint
    from .config import ConfigError, build
    from .dmtet.config import FineConfig
    from .dmtet.scene import blank_fine_scene

    stage = stage or ws.final_stage()
    if stage == "coarse":
        scene, _ = ws.load_scene(device, checkpoint)
        return scene, stage
    fine_ws = ws.stage("fine")
    path = checkpoint or fine_ws.last_checkpoint
    if not fine_ws.last_checkpoint.is_file() and checkpoint is None:
        raise CheckpointError(f"{ws.root} has no fine stage ({fine_ws.last_checkpoint} is missing); run dream.py --stage fine first")
    scene_cfg, data = ws.scene_config(), ws.read_config()
    if not isinstance(data.get("fine"), dict):
        raise ConfigError(f"{ws.config_path} has no fine: section, so its fine stage cannot be rebuilt")
    fine = build(FineConfig, data["fine"], prefix="fine")
    camera = build(CameraConfig, data.get("camera") or {}, prefix="camera")
    rep = blank_fine_scene(fine.dmtet, fine.train, scene_cfg.field, Background(scene_cfg.background).to(device),
                           scene_cfg.field.bound, device, camera.elevation_range)
    state = load_checkpoint(path, map_location="cpu")
    try:
        rep.load_state_dict(state["scene"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} does not match the workspace's config.yaml ({type(err).__name__}); "
                              "pass --checkpoint with one of this run's fine checkpoints, or train again") from None
    return rep.eval(), stage


def export_dir(ws, stage: str):
    """Where a stage's mesh and video go: the workspace's mesh/ and video/ for its final stage,
    coarse/ for the coarse stage of a run that was refined (the layout's coarse_result)."""
    if stage == ws.final_stage():
        return ws
    if stage != "coarse":  # a stage the run has not reached
        from .checkpoint import CheckpointError

        raise CheckpointError(f"{ws.root} has no {stage} stage; run scripts/dream.py --stage {stage} --workspace {ws.root} first")
    return ws.coarse_result()
