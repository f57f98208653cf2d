"""The stages of a run and how each one starts: which representation it trains, with which loop.

* coarse: the representation the config names (`representation: {type: ...}`, registry.py):
  DreamFusion's NeRF (scene.Scene) from the density blob by default, trained with `train:`;
* fine: Magic3D's DMTet (dmtet.scene.DMTetScene) from the coarse result's cleaned level set and
  albedo (its `from_previous`), trained with `fine.train:` (and `fine.guidance:` over the run's guidance).

A stage that resumes, or a workspace that is only exported, rebuilds its representation from the
config and loads the checkpoint: the fine stage needs no coarse run for that.
"""
from __future__ import annotations


import torch

from .config import to_dict
from .registry import FINE_DEFAULT, representation_class
from .representation import Representation
from .run_config import RunConfig
from .train import Stage

STAGES = ("coarse", "fine")


def coarse_stage(cfg: RunConfig, device: torch.device | str) -> Stage:
    """The first stage: the representation the config names (DreamFusion's NeRF by default), from nothing."""
    cls, _ = cfg.representation_options()
    return Stage("coarse", cls.build(cfg, device), cfg.train, cfg.camera, cfg.light, cfg.seed, to_dict(cfg))


def fine_stage(cfg: RunConfig, device: torch.device | str, coarse: Representation | None = None) -> Stage:
    """The DMTet stage; from the trained `coarse` representation, or blank (to load a fine checkpoint into)."""
    if cfg.fine is None:
        raise ValueError("this run config has no fine: section")
    cls = representation_class(FINE_DEFAULT)
    rep = cls.from_previous(coarse, cfg, device) if coarse is not None else cls.blank(cfg, device)
    return Stage("fine", rep, cfg.fine.train, cfg.camera, cfg.light, cfg.seed, to_dict(cfg))


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
    default, for export and video. Each stage is rebuilt from config.yaml and its checkpoint alone."""
    stage = stage or ws.final_stage()
    rep, _ = ws.load_stage(stage, device, checkpoint)
    return rep, stage


def export_dir(ws, stage: str):
    """Where a stage's mesh and video go: the workspace's mesh/ and video/ for its final stage,
    coarse/ for the coarse stage of a run that was refined (the layout's coarse_result)."""
    if stage == ws.final_stage():
        return ws
    if stage != "coarse":  # a stage the run has not reached
        from .checkpoint import CheckpointError

        raise CheckpointError(f"{ws.root} has no {stage} stage; run scripts/dream.py --stage {stage} --workspace {ws.root} first")
    return ws.coarse_result()
