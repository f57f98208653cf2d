"""What a run folder holds, for its gallery page: meshes, videos, validation strips, curves, config,
summary and evaluation. Only reads; whatever is missing is recorded with the reason, never raised."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..eval.report import EVALUATION_FILE

STAGES = ("coarse", "fine")


@dataclass
class StageRecord:
    name: str
    validation: list[Path]  # strips by step
    metrics: list[dict]  # metrics.jsonl rows


@dataclass
class AssetRecord:
    root: Path
    prompt: str
    summary: dict | None  # run.json
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


def _stage_dir(root: Path, name: str) -> Path:
    return root if name == "coarse" else root / name


def is_workspace(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def collect_asset(root: str | Path) -> AssetRecord:
    root = Path(root)
    summary = read_json(root / "run.json")
    config_text = (root / "config.yaml").read_text(encoding="utf-8") if (root / "config.yaml").is_file() else ""
    prompt = (summary or {}).get("prompt") or _prompt_from_config(config_text)
    stages = []
    for name in STAGES:
        folder = _stage_dir(root, name)
        metrics = read_metrics(folder / "metrics.jsonl")
        strips = sorted((folder / "validation").glob("step_*.png")) if (folder / "validation").is_dir() else []
        if metrics or strips:
            stages.append(StageRecord(name, strips, metrics))
    meshes = {}
    if (root / "mesh" / "model.glb").is_file():
        meshes["result"] = root / "mesh" / "model.glb"
    if (root / "coarse" / "mesh" / "model.glb").is_file():
        meshes["coarse"] = root / "coarse" / "mesh" / "model.glb"
    notes = []
    if "result" not in meshes:
        reasons = (summary or {}).get("export_skipped") or []
        if summary is None:
            reasons = reasons or ["the run has not finished (no run.json)"]
        elif summary.get("exported") is False and not reasons:
            reasons = ["the export found no surface in the trained field"]
        notes.append("No mesh: " + ("; ".join(reasons) if reasons else "the run was not exported (--no-export)")
                     + f". Retry with: python scripts/export_mesh.py --workspace {root}")
    videos = sorted((root / "video").glob("*.mp4")) if (root / "video").is_dir() else []
    return AssetRecord(root, prompt, summary, meshes, videos, stages, config_text, read_json(root / EVALUATION_FILE), notes)


def _prompt_from_config(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("prompt:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    return ""


def find_suite_results(folder: Path) -> Path | None:
    """OUT/<suite>_results.json of an evaluate.py folder."""
    found = sorted(folder.glob("*_results.json"))
    return found[0] if found else None
