"""A run's folder: where every file lives, and run.json, in one torch-free place.

    WORKSPACE/
      config.yaml            the fully resolved config (its scene sections rebuild the field)
      checkpoints/last.pt    the coarse stage's latest checkpoint: {"scene": state, "step": int, ...}
      checkpoints/step_N.pt  periodic checkpoints
      validation/ metrics.jsonl
      fine/                  the fine stage (when the run has one): checkpoints/ validation/ metrics.jsonl
      mesh/ video/           the run's result: the last stage's mesh and turntable
      coarse/mesh/ video/    in a two-stage run, the coarse stage's mesh and turntable (for comparison)
      run.json               RunSummary, written when the run finishes

The gallery and the batch runner read folders through this module without importing torch;
`workspace.Workspace` adds what needs it (rebuilding a scene from its checkpoint).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError
from .utils.atomic import atomic_write

STAGES = ("coarse", "fine")
MESH_FILES = ("model.glb", "model.obj", "model.ply")


def slug(prompt: str) -> str:
    """A folder name for a prompt: 'A red cube!' → 'a-red-cube'."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "run"


@dataclass
class RunSummary:
    """run.json: a finished run's prompt, stages and timings. train_seconds sums the step times of
    every stage over every session (resumes included); wall_seconds is the last session's whole
    command, loading included."""

    prompt: str
    seed: int = 0
    stages: list[str] = field(default_factory=list)
    result: str = "coarse"  # the stage whose mesh and video are the run's result
    steps: dict[str, int] = field(default_factory=dict)
    finished: bool = True
    exported: bool = False  # everything asked for was exported
    export_skipped: list[str] = field(default_factory=list)  # why something was not
    train_seconds: float = 0.0
    stage_train_seconds: dict[str, float] = field(default_factory=dict)
    export_seconds: float = 0.0
    wall_seconds: float | None = None
    source: str | None = None  # the workspace a refined run started from, when not this one

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def read(cls, path: str | Path) -> "RunSummary | None":
        """The summary at `path`; None when there is none or it is unreadable (a run in progress,
        or a file of another version: unknown keys are dropped, missing ones take their defaults)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class WorkspaceLayout:
    """The paths of a run's folder, its config and its summary (reads only; no torch)."""

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

    def stage(self, name: str):
        """The folder of one stage's training: the root for the coarse stage, fine/ for the fine one
        (of this class, so a Workspace's stage is a Workspace)."""
        return self if name == "coarse" else type(self)(self.root / name)

    def final_stage(self) -> str:
        """The last stage trained here: 'fine' once fine/checkpoints/last.pt exists, else 'coarse'."""
        return "fine" if self.stage("fine").last_checkpoint.is_file() else "coarse"

    def coarse_result(self):
        """coarse/: where a refined run keeps its coarse stage's mesh/ and video/ (of this class)."""
        return type(self)(self.root / "coarse")

    def exported_mesh(self) -> Path | None:
        """The result's mesh file (model.glb, else .obj, else .ply), None when nothing was exported."""
        return next((self.mesh_dir / n for n in MESH_FILES if (self.mesh_dir / n).is_file()), None)

    def is_workspace(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.root} is not a dreamfusion workspace: {self.config_path.name} is missing")
        try:
            with open(self.config_path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{self.config_path} is not valid YAML ({type(err).__name__})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_path} does not hold a config mapping")
        return data

    def write_config(self, data: dict[str, Any]) -> None:
        text = yaml.safe_dump(data, sort_keys=False)
        atomic_write(self.config_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def read_summary(self) -> RunSummary | None:
        return RunSummary.read(self.summary_path)

    def prompt(self) -> str:
        """The run's prompt: run.json's, else config.yaml's, else ''."""
        summary = self.read_summary()
        if summary is not None:
            return summary.prompt
        try:
            return str(self.read_config().get("prompt") or "")
        except ConfigError:
            return ""
