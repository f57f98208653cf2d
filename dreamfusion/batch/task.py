"""One run of a batch: a (prompt, seed) in its workspace, called in-process (pipeline.run), reused
when finished, resumed when interrupted, reported as a RunRecord instead of raising.

This is what a Ray worker executes, and what a sequential batch calls directly: the same code
either way. It is idempotent, so Ray may retry it after losing its worker: the retry finds the
last checkpoint and continues from it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import RunSummary, WorkspaceLayout, slug

RUNNER_FILE = "runner.json"  # where and how often a batch ran this workspace


@dataclass
class RunSettings:
    """What every run of a batch shares: dream.py's --config, --device and key=value overrides."""

    config: str | None = None
    device: str = "auto"
    overrides: list[str] = field(default_factory=list)

    def check(self) -> None:
        """The config and overrides, checked once before any run starts (ConfigError naming the
        key), so a typo fails in one sentence instead of once per run."""
        from ..run_config import load_run_config

        load_run_config(self.config, [*self.overrides, "prompt=settings check"])


@dataclass
class RunSpec:
    prompt: str
    seed: int
    workspace: Path
    settings: RunSettings = field(default_factory=RunSettings)
    fresh: bool = False  # replace a finished or interrupted run instead of reusing it
    threads: int | None = None  # CPU threads for this run (its share of the node's cores)
    log: Path | None = None  # the run's output goes here (else to this process's stdout)


@dataclass
class RunRecord:
    prompt: str
    seed: int
    workspace: Path
    status: str  # "ran", "reused", "failed", "interrupted" (or "given": a workspace not run here)
    seconds: float | None  # wall time of the asset: training, export and model loading
    message: str = ""


def workspace_for(runs_dir: Path, prompt: str, seed: int) -> WorkspaceLayout:
    return WorkspaceLayout(Path(runs_dir) / f"{slug(prompt)}-s{seed}")


def finished_summary(ws: WorkspaceLayout, prompt: str) -> RunSummary | None:
    """run.json of a finished, exported run of `prompt` in `ws`, else None."""
    summary = ws.read_summary()
    if summary is None or summary.prompt != prompt or not summary.finished or not summary.exported:
        return None
    return summary


def asset_seconds(summary: RunSummary) -> float | None:
    """What the asset cost: the command's wall time, or, when the last session only resumed a run
    (e.g. to retry its export), the training summed over every session plus the export."""
    if summary.wall_seconds is None:
        return None
    return round(max(float(summary.wall_seconds), (summary.train_seconds or 0.0) + (summary.export_seconds or 0.0)), 1)


def _note_attempt(ws: WorkspaceLayout) -> None:
    """runner.json: the host and process running it, and how many attempts so far (Ray's retries
    after a lost worker show here)."""
    path = ws.root / RUNNER_FILE
    try:
        attempts = int(json.loads(path.read_text(encoding="utf-8")).get("attempts", 0))
    except (OSError, ValueError, AttributeError):
        attempts = 0
    ws.root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "attempts": attempts + 1,
                                "started": time.time()}), encoding="utf-8")


@contextlib.contextmanager
def _output_to(log: Path | None):
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        yield


def run_one(spec: RunSpec) -> RunRecord:
    """The run of spec.prompt/seed in spec.workspace, or the reason it failed (never raises for a
    failed run: one bad prompt must not take the batch down)."""
    import torch

    from ..config import ConfigError
    from ..pipeline import RunRequest, run

    ws = WorkspaceLayout(spec.workspace)
    if not spec.fresh:
        summary = finished_summary(ws, spec.prompt)
        if summary is not None:
            return RunRecord(spec.prompt, spec.seed, ws.root, "reused", asset_seconds(summary))
    resume = not spec.fresh and ws.last_checkpoint.is_file()
    # stopped before its first checkpoint, or asked to start over: nothing to keep
    overwrite = spec.fresh or (not resume and ws.config_path.is_file())
    req = RunRequest(prompt=spec.prompt, seed=spec.seed, workspace=str(ws.root), config=spec.settings.config,
                     device=spec.settings.device, resume=resume, overwrite=overwrite, quiet=True,
                     overrides=list(spec.settings.overrides))
    if spec.threads:
        torch.set_num_threads(spec.threads)
    _note_attempt(ws)
    start = time.time()
    with _output_to(spec.log):
        try:
            outcome = run(req)
        except Exception as err:  # noqa: BLE001 - reported as this run's failure (ConfigError included)
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if not isinstance(err, ConfigError):
                message = f"{type(err).__name__}: {message}"
            print(f"batch: error: {message}", file=sys.stderr)
            return RunRecord(spec.prompt, spec.seed, ws.root, "failed", time.time() - start, message)
    seconds = time.time() - start
    if outcome.code == 1:
        return RunRecord(spec.prompt, spec.seed, ws.root, "failed", seconds, outcome.reason)
    if outcome.code != 0:
        return RunRecord(spec.prompt, spec.seed, ws.root, "interrupted", seconds,
                         "interrupted; the same command resumes it from its last checkpoint")
    summary = ws.read_summary()
    if summary is not None:
        seconds = max(seconds, asset_seconds(summary) or 0.0)
    return RunRecord(spec.prompt, spec.seed, ws.root, "ran", seconds)
