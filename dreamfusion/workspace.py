"""A run's folder and how to rebuild its scene from it (the layout itself: layout.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import build, to_dict
from .layout import RunSummary, WorkspaceLayout, slug  # noqa: F401 (re-exported)
from .scene import Scene, SceneConfig, build_scene

SCENE_SECTIONS = tuple(f.name for f in dataclasses.fields(SceneConfig))


class Workspace(WorkspaceLayout):
    """A WorkspaceLayout that can also load what it holds: the coarse scene and its checkpoint step."""

    def checkpoint_step(self) -> int | None:
        """The step of checkpoints/last.pt (None without one; CheckpointError if unreadable)."""
        if not self.last_checkpoint.is_file():
            return None
        return int(load_checkpoint(self.last_checkpoint).get("step", 0))

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
