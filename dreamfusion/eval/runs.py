"""Producing the assets an evaluation scores: one dream.py run per (prompt, seed), reused when finished.

Each run is a subprocess, so one failing prompt (or one that leaks memory) cannot take the whole
suite down; its output goes to a log file beside the workspaces. A workspace counts as finished
when its run.json (written by dream.py after export) names the same prompt; an interrupted one is
resumed; `fresh=True` replaces every run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..workspace import Workspace, slug

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # so `-m dreamfusion...` finds this very copy

DREAM = ["-m", "dreamfusion.cli.dream"]  # works from a clone and from an installed package alike


@dataclass
class RunRecord:
    prompt: str
    seed: int
    workspace: Path
    status: str  # "ran", "reused" or "failed"
    seconds: float | None  # wall time of the asset: training, export and model loading
    message: str = ""


def workspace_for(runs_dir: Path, prompt: str, seed: int) -> Workspace:
    return Workspace(Path(runs_dir) / f"{slug(prompt)}-s{seed}")


def read_summary(ws: Workspace) -> dict | None:
    """The workspace's run.json, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(ws.summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def finished_summary(ws: Workspace, prompt: str) -> dict | None:
    """run.json of a finished, exported run of `prompt` in `ws`, else None."""
    summary = read_summary(ws)
    if summary is None or summary.get("prompt") != prompt or not summary.get("finished") or not summary.get("exported"):
        return None
    return summary


def asset_seconds(summary: dict) -> float | None:
    """What the asset cost: the command's wall time, or, when the last session only resumed a run
    (e.g. to retry its export), the training summed over every session plus the export."""
    wall = summary.get("wall_seconds")
    work = (summary.get("train_seconds") or 0.0) + (summary.get("export_seconds") or 0.0)
    return None if wall is None else round(max(float(wall), work), 1)


def _last_error_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["dream.py failed without output"])[-1]


def ensure_run(prompt: str, seed: int, runs_dir: Path, dream_args: Sequence[str] = (), fresh: bool = False,
               threads: int | None = None) -> RunRecord:
    """Run dream.py for (prompt, seed) unless a finished workspace exists; resume an interrupted one.

    `threads` caps the run's CPU threads (OMP_NUM_THREADS), for runs side by side: two 2-thread
    PyTorch processes on 2 cores spin against each other and are both several times slower."""
    ws = workspace_for(runs_dir, prompt, seed)
    if not fresh:
        summary = finished_summary(ws, prompt)
        if summary is not None:
            return RunRecord(prompt, seed, ws.root, "reused", asset_seconds(summary))
    cmd = [sys.executable, *DREAM, "--prompt", prompt, "--seed", str(seed), "--workspace", str(ws.root), "--quiet"]
    if fresh:
        cmd.append("--overwrite")
    elif ws.last_checkpoint.is_file():
        cmd.append("--resume")
    elif ws.config_path.is_file():
        cmd.append("--overwrite")  # stopped before its first checkpoint: nothing to keep
    cmd += list(dream_args)
    log_dir = Path(runs_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{ws.root.name}.log"
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None
        env = dict(env or os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.time() - start
    if code != 0:
        message = _last_error_line(log_path.read_text(encoding="utf-8", errors="replace"))
        return RunRecord(prompt, seed, ws.root, "failed", seconds, f"{message} (log: {log_path})")
    summary = read_summary(ws)
    if summary is not None:
        seconds = max(seconds, asset_seconds(summary) or 0.0)
    return RunRecord(prompt, seed, ws.root, "ran", seconds)
