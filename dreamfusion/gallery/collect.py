"""What a run folder holds, for its gallery page: meshes, videos, validation strips, curves, config,
summary and evaluation. Only reads; whatever is missing is recorded with the reason, never raised."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..eval.report import EVALUATION_FILE
from ..layout import STAGES, RunSummary, WorkspaceLayout


@dataclass
class StageRecord:
    name: str
    validation: list[Path]  # strips by step
    metrics: list[dict]  # metrics.jsonl rows


@dataclass
class AssetRecord:
    root: Path
    prompt: str
    summary: RunSummary | None  # run.json
    meshes: dict[str, Path]  # "result" and, for a refined run, "coarse": model.glb
    videos: list[Path]
    stages: list[StageRecord]
    config_text: str
    evaluation: dict | None
    notes: list[str] = field(default_factory=list)  # why something is missing

    @property
    def title(self) -> str:
        return self.prompt or self.root.name


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_metrics(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill mid-write
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
    return rows


def is_workspace(path: Path) -> bool:
    return WorkspaceLayout(path).is_workspace()


def collect_asset(root: str | Path) -> AssetRecord:
    ws = WorkspaceLayout(root)
    root = ws.root
    summary = ws.read_summary()
    config_text = ws.config_path.read_text(encoding="utf-8") if ws.config_path.is_file() else ""
    stages = []
    for name in STAGES:
        folder = ws.stage(name)
        metrics = read_metrics(folder.metrics_path)
        strips = sorted(folder.validation_dir.glob("step_*.png")) if folder.validation_dir.is_dir() else []
        if metrics or strips:
            stages.append(StageRecord(name, strips, metrics))
    meshes = {}
    if (ws.mesh_dir / "model.glb").is_file():
        meshes["result"] = ws.mesh_dir / "model.glb"
    coarse = ws.coarse_result()
    if (coarse.mesh_dir / "model.glb").is_file():
        meshes["coarse"] = coarse.mesh_dir / "model.glb"
    notes = []
    if "result" not in meshes:
        reasons = summary.export_skipped if summary is not None else ["the run has not finished (no run.json)"]
        notes.append("No mesh: " + ("; ".join(reasons) if reasons else "the run was not exported (--no-export)")
                     + f". Retry with: python scripts/export_mesh.py --workspace {root}")
    videos = sorted(ws.video_dir.glob("*.mp4")) if ws.video_dir.is_dir() else []
    prompt = summary.prompt if summary is not None else ws.prompt()  # run.json once, config.yaml only without it
    return AssetRecord(root, prompt, summary, meshes, videos, stages, config_text, read_json(root / EVALUATION_FILE), notes)


def find_suite_results(folder: Path) -> Path | None:
    """OUT/<suite>_results.json of an evaluate.py folder."""
    found = sorted(folder.glob("*_results.json"))
    return found[0] if found else None
