"""A run's folder and how to rebuild its stages from it (the layout itself: layout.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import build, to_dict
from .layout import RunSummary, WorkspaceLayout, slug  # noqa: F401 (re-exported)
from .scene import Scene, SceneConfig

if TYPE_CHECKING:
    from .representation import Representation
    from .run_config import RunConfig

SCENE_SECTIONS = tuple(f.name for f in dataclasses.fields(SceneConfig))
# What rebuilding a stage reads of config.yaml: the scene sections, the coarse representation's and
# the fine stage's (not guidance or train, whose keys an older run may spell differently).
STAGE_SECTIONS = (*SCENE_SECTIONS, "representation", "fine", "seed")


class Workspace(WorkspaceLayout):
    """A WorkspaceLayout that can also load what it holds: each stage's representation and checkpoint step."""

    def checkpoint_step(self) -> int | None:
        """The step of checkpoints/last.pt (None without one; CheckpointError if unreadable)."""
        if not self.last_checkpoint.is_file():
            return None
        return int(load_checkpoint(self.last_checkpoint).get("step", 0))

    def scene_config(self) -> SceneConfig:
        data = self.read_config()
        return build(SceneConfig, {k: v for k, v in data.items() if k in SCENE_SECTIONS})

    def stage_config(self) -> "RunConfig":
        """The run config as far as rebuilding its stages needs it (STAGE_SECTIONS of config.yaml)."""
        from .run_config import RunConfig

        data = self.read_config()
        return build(RunConfig, {k: v for k, v in data.items() if k in STAGE_SECTIONS})

    def load_stage(self, stage: str = "coarse", device: torch.device | str = "cpu",
                   checkpoint: str | Path | None = None) -> tuple["Representation", dict[str, Any]]:
        """A stage's representation, rebuilt through the registry from config.yaml and loaded from
        `checkpoint` (default: that stage's checkpoints/last.pt), in evaluation mode."""
        from .registry import FINE_DEFAULT, representation_class

        own = self if stage == "coarse" else self.stage(stage)
        path = Path(checkpoint) if checkpoint is not None else own.last_checkpoint
        if not path.is_file() and stage == "coarse":
            raise CheckpointError(f"{self.root} has no checkpoint ({path} is missing); run scripts/dream.py first")
        if not path.is_file() and checkpoint is None:
            raise CheckpointError(f"{self.root} has no {stage} stage ({path} is missing); run dream.py --stage {stage} first")
        cfg = self.stage_config()
        if stage != "coarse" and cfg.fine is None:
            from .config import ConfigError

            raise ConfigError(f"{self.config_path} has no {stage}: section, so its {stage} stage cannot be rebuilt")
        cls = cfg.representation_options()[0] if stage == "coarse" else representation_class(FINE_DEFAULT)
        state = load_checkpoint(path, map_location="cpu")
        try:
            rep = cls.from_checkpoint(cfg, state["scene"], device)
        except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint {path} does not match the workspace's config.yaml ({type(err).__name__}); "
                "pass --checkpoint with one of this run's checkpoints, or train again"
            ) from None
        return rep.eval(), state

    def load_scene(self, device: torch.device | str = "cpu", checkpoint: str | Path | None = None) -> tuple["Representation", dict[str, Any]]:
        """The coarse stage's representation and its checkpoint (default: checkpoints/last.pt)."""
        return self.load_stage("coarse", device, checkpoint)


def save_scene_workspace(root: str | Path, scene: Scene, extra_config: dict[str, Any] | None = None, step: int = 0) -> Workspace:
    """Write config.yaml and checkpoints/last.pt for `scene` (used by tests and the trainer)."""
    ws = Workspace(root)
    ws.root.mkdir(parents=True, exist_ok=True)
    ws.write_config({**to_dict(scene.cfg), **(extra_config or {})})
    save_checkpoint(ws.last_checkpoint, {"scene": scene.state_dict(), "step": step})
    return ws
