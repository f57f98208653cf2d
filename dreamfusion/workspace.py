"""A run's folder on disk and how to rebuild its scene from it.

    WORKSPACE/
      config.yaml            the fully resolved config (its scene sections rebuild the field)
      checkpoints/last.pt    the coarse stage's latest checkpoint: {"scene": state, "step": int, ...}
      checkpoints/step_N.pt  periodic checkpoints
      validation/ metrics.jsonl
      fine/                  the fine stage (when the run has one): checkpoints/ validation/ metrics.jsonl
      mesh/ video/           the run's result: the last stage's mesh and turntable
      coarse/mesh/           in a two-stage run, the coarse stage's mesh (for comparison)
      run.json               prompt, stages and timings, written when the run finishes
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, atomic_write
from .config import ConfigError, build, to_dict
from .scene import Scene, SceneConfig, build_scene

SCENE_SECTIONS = tuple(f.name for f in dataclasses.fields(SceneConfig))


def slug(prompt: str) -> str:
    """A folder name for a prompt: 'A red cube!' → 'a-red-cube'."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "run"


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    config_path = property(lambda self: self.root / "config.yaml")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last_checkpoint = property(lambda self: self.root / "checkpoints" / "last.pt")
    mesh_dir = property(lambda self: self.root / "mesh")
    video_dir = property(lambda self: self.root / "video")
    validation_dir = property(lambda self: self.root / "validation")
    metrics_path = property(lambda self: self.root / "metrics.jsonl")
    summary_path = property(lambda self: self.root / "run.json")  # written when a run finishes

    def stage(self, name: str) -> "Workspace":
        """The folder of one stage's training: the root for the coarse stage, fine/ for the fine one."""
        return self if name == "coarse" else Workspace(self.root / name)

    def final_stage(self) -> str:
        """The last stage trained here: 'fine' once fine/checkpoints/last.pt exists, else 'coarse'."""
        return "fine" if self.stage("fine").last_checkpoint.is_file() else "coarse"

    def checkpoint_step(self) -> int | None:
        """The step of checkpoints/last.pt (None without one; CheckpointError if unreadable)."""
        if not self.last_checkpoint.is_file():
            return None
        return int(load_checkpoint(self.last_checkpoint).get("step", 0))

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.root} is not a dreamfusion workspace: {self.config_path.name} is missing")
        with open(self.config_path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_path} does not hold a config mapping")
        return data

    def write_config(self, data: dict[str, Any]) -> None:
        text = yaml.safe_dump(data, sort_keys=False)
        atomic_write(self.config_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def scene_config(self) -> SceneConfig:
        data = self.read_config()
        return build(SceneConfig, {k: v for k, v in data.items() if k in SCENE_SECTIONS})

    def load_scene(self, device: torch.device | str = "cpu", checkpoint: str | Path | None = None) -> tuple[Scene, dict[str, Any]]:
        """Rebuild the scene and load its weights from `checkpoint` (default: checkpoints/last.pt)."""
        path = Path(checkpoint) if checkpoint is not None else self.last_checkpoint
        if not path.is_file():
            raise CheckpointError(f"{self.root} has no checkpoint ({path} is missing); run scripts/dream.py first")
        scene = build_scene(self.scene_config(), device=device)
        state = load_checkpoint(path, map_location=device)
        try:
            scene.load_state_dict(state["scene"])
        except (KeyError, RuntimeError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"checkpoint {path} does not match the workspace's config.yaml ({type(err).__name__}); "
                "pass --checkpoint with one of this run's checkpoints, or train again"
            ) from None
        scene.field.eval()
        return scene, state


def save_scene_workspace(root: str | Path, scene: Scene, extra_config: dict[str, Any] | None = None, step: int = 0) -> Workspace:
    """Write config.yaml and checkpoints/last.pt for `scene` (used by tests and the trainer)."""
    ws = Workspace(root)
    ws.root.mkdir(parents=True, exist_ok=True)
    ws.write_config({**to_dict(scene.cfg), **(extra_config or {})})
    save_checkpoint(ws.last_checkpoint, {"scene": scene.state_dict(), "step": step})
    return ws
