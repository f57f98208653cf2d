"""A text-to-3D run, callable in-process: checks, stages, signals, exports and the summary.

`run(RunRequest(prompt=...))` is what `scripts/dream.py` (and the `dreamfusion-dream` command)
does; evaluation and batch runners call it too. Every reason to refuse a run (a bad config key, a
workspace holding another run, an unknown word for the bundled prior) is found before anything is
loaded or written; a refused run raises ConfigError and leaves the workspace as it was.

Workspace layout (workspace.py): the coarse stage's checkpoints/, validation/ and metrics.jsonl
at the root, the mesh/ and video/ of the result, and run.json once the run is finished.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .checkpoint import atomic_write
from .config import ConfigError, to_dict
from .guidance.vocabulary import closed_vocabulary, unknown_words
from .run_config import DEFAULT_OUTPUTS, RunConfig, load_run_config
from .utils.capabilities import resolve_device, warn
from .workspace import Workspace, slug


@dataclass
class RunRequest:
    """What a user asks for: dream.py's flags."""

    prompt: str
    negative: str | None = None
    config: str | None = None  # YAML file (default: the toy recipe)
    steps: int | None = None  # train.steps
    seed: int | None = None
    workspace: str | None = None  # default: outputs/<prompt-slug>
    device: str | None = None  # auto, cpu or cuda
    resume: bool = False
    overwrite: bool = False
    force: bool = False  # run even with words a closed-vocabulary prior never saw
    no_export: bool = False
    quiet: bool = False
    overrides: list[str] = field(default_factory=list)  # dotted key=value
    program: str = "python scripts/dream.py"  # how the user started it, for the printed resume command


@dataclass
class RunOutcome:
    code: int  # 0 done, 130 interrupted (checkpoint saved)
    workspace: Workspace
    summary: dict | None = None


# ---- checks: everything that can refuse the run, before any work ------------------------------------

def resolve_config(req: RunRequest) -> RunConfig:
    if not req.prompt.strip():
        raise ConfigError('--prompt is empty; say what to make, e.g. --prompt "a red cube"')
    overrides = list(req.overrides)
    extra = {"prompt": req.prompt.strip()}
    if req.negative is not None:
        extra["negative_prompt"] = req.negative
    for key, value in (("seed", req.seed), ("device", req.device)):
        if value is not None:
            extra[key] = value
    if req.steps is not None:
        overrides.append(f"train.steps={req.steps}")
    return load_run_config(req.config, overrides, extra)


def check_workspace(req: RunRequest, cfg: RunConfig) -> Workspace:
    """Every reason to refuse the workspace, found before anything is loaded or written."""
    ws = Workspace(req.workspace or DEFAULT_OUTPUTS / slug(cfg.prompt))
    if ws.root.exists() and not ws.root.is_dir():
        raise ConfigError(f"workspace {ws.root} is a file, not a folder; choose another --workspace")
    if req.resume:
        if not ws.last_checkpoint.is_file():
            raise ConfigError(f"--resume: {ws.root} has no checkpoint to resume from; drop --resume to start a new run")
        previous = ws.read_config().get("prompt")
        if previous != cfg.prompt:
            raise ConfigError(f"--resume: {ws.root} holds a run for {previous!r}, not {cfg.prompt!r}")
    elif (ws.config_path.is_file() or ws.last_checkpoint.is_file()) and not req.overwrite:
        previous = ws.read_config().get("prompt") if ws.config_path.is_file() else "?"
        raise ConfigError(
            f"{ws.root} already holds a run (prompt {previous!r}); pass --resume to continue it, "
            "--overwrite to replace it, or --workspace to choose another folder"
        )
    existing = ws.root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to workspace {ws.root} ({existing} is not a writable folder); choose another --workspace")
    return ws


def check_vocabulary(cfg: RunConfig, force: bool) -> None:
    """A closed-vocabulary prior (the bundled one) scores unseen words as noise: refuse them unless forced."""
    vocabulary = closed_vocabulary(cfg.guidance.model)
    if vocabulary is None:
        return
    unknown = unknown_words(f"{cfg.prompt} {cfg.negative_prompt or ''}", vocabulary)
    if not unknown:
        return
    words = ", ".join(repr(w) for w in unknown)
    if not force:
        raise ConfigError(
            f"the guidance model {cfg.guidance.model} was never trained on {words}; it knows only: "
            f"{' '.join(vocabulary)}. Rephrase the prompt with those words, or pass --force to run anyway"
        )
    warn(f"the guidance model has never seen {words}; running anyway (--force)")


def open_workspace(req: RunRequest, ws: Workspace) -> None:
    """The first write, after every check has passed: clear a replaced run (--overwrite), create the folder."""
    if req.overwrite and not req.resume:
        for sub in ("checkpoints", "validation", "mesh", "video"):
            shutil.rmtree(ws.root / sub, ignore_errors=True)
        ws.metrics_path.unlink(missing_ok=True)
    if ws.summary_path.is_file():
        ws.summary_path.unlink()  # run.json marks a finished run; this one is not, yet
    for folder in (ws.root, ws.checkpoints):
        for stale in folder.glob(".*.tmp"):  # a killed run's half-written temporaries (atomic_write)
            stale.unlink(missing_ok=True)
    try:
        ws.root.mkdir(parents=True, exist_ok=True)
        probe = ws.root / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to workspace {ws.root} ({err.strerror}); choose another --workspace") from None


def resume_command(req: RunRequest, ws: Workspace) -> str:
    """The command that continues this run: the same prompt, config, overrides and flags, plus --resume."""
    parts = [*shlex.split(req.program), "--prompt", req.prompt]
    for flag, value in (("--negative", req.negative), ("--config", req.config), ("--steps", req.steps),
                        ("--seed", req.seed), ("--device", req.device)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--workspace", str(ws.root), "--resume"]
    parts += [flag for flag, on in (("--force", req.force), ("--no-export", req.no_export), ("--quiet", req.quiet)) if on]
    return shlex.join(parts + list(req.overrides))


# ---- the run ------------------------------------------------------------------------------------------

def quiet_libraries() -> None:
    """diffusers/transformers chatter (weight-loading bars, accelerate hints) is not the user's business."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


class StopFlag:
    """Set by SIGINT / SIGTERM (when installed in the main thread) or by the caller."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> bool:
        return self.reason is not None

    def install(self) -> Callable[[], None]:
        """Catch SIGINT and SIGTERM until the returned function restores the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum, _frame):
            self.reason = signal.Signals(signum).name

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in old.items()] and None


def train_stage(trainer, total: int, quiet: bool, stop: StopFlag, label: str) -> None:
    """Run a trainer to its step count with a progress bar (or plain lines with quiet)."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=trainer.step, desc=label, disable=quiet, unit="step")
    start, first = time.time(), trainer.step

    def on_step(result) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{result.metrics['sds']:.3g}", t=f"{result.metrics['t']:.2f}")
        if quiet and (result.step % 50 == 0 or result.step == total):
            rate = (result.step - first) / max(1e-9, time.time() - start)
            print(f"{label} step {result.step}/{total} sds {result.metrics['sds']:.4g} ({rate:.2f} step/s)", flush=True)

    try:
        trainer.run(on_step=on_step, stop=stop)
    finally:
        bar.close()


def export_results(rep, cfg: RunConfig, ws: Workspace, quiet: bool) -> bool:
    """The mesh and the video of a trained representation; an empty one skips each with the reason
    (training is kept, not failed). Returns whether everything asked for was written."""
    from .export import ExportError, load_exported_mesh
    from .export.video import render_turntable

    e, done, mesh_written = cfg.export, True, False
    rep.eval()  # its schedules are those of the last checkpoint
    if e.mesh:
        try:
            result = rep.export_mesh(ws.mesh_dir, cfg.mesh_export_config(), progress=not quiet)
            mesh_written = True
            print(f"mesh: {len(result.files)} files in {ws.mesh_dir} ({result.n_faces} faces)")
        except ExportError as err:
            done = False
            print(f"dream: mesh export skipped: {err} (the checkpoint is kept: scripts/export_mesh.py --workspace {ws.root} retries)", file=sys.stderr)
    if e.video:
        try:
            # the exported file when there is one (what the user gets, and 5-10x faster); else the field
            source = {"mesh": load_exported_mesh(ws.mesh_dir)} if e.video_source == "mesh" and mesh_written else {"field": rep.field}
            paths = render_turntable(ws.video_dir, cfg.video_config(), bound=rep.bound, progress=not quiet, **source)
            print(f"video: {', '.join(p.name for p in paths)} in {ws.video_dir} (from the {next(iter(source))})")
        except ExportError as err:
            done = False
            print(f"dream: video skipped: {err} (the checkpoint is kept: scripts/render_video.py --workspace {ws.root} retries)", file=sys.stderr)
    return done


def write_summary(ws: Workspace, cfg: RunConfig, steps: int, export_seconds: float, wall_seconds: float, exported: bool) -> dict:
    """run.json: the finished run's prompt and timings. train_seconds sums the step times over every
    session (resumes included); wall_seconds is this last session's whole command, loading included."""
    train_seconds = 0.0
    for line in ws.metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            train_seconds += float(json.loads(line).get("seconds", 0.0))
        except (ValueError, AttributeError):
            continue
    summary = {"prompt": cfg.prompt, "seed": cfg.seed, "steps": steps, "finished": True, "exported": exported,
               "train_seconds": round(train_seconds, 1), "export_seconds": round(export_seconds, 1),
               "wall_seconds": round(wall_seconds, 1)}
    text = json.dumps(summary, indent=1)
    atomic_write(ws.summary_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return summary


def run(req: RunRequest, stop: StopFlag | None = None) -> RunOutcome:
    """The whole run. Raises ConfigError (bad input: nothing written) or a runtime error; returns
    code 130 when a signal or `stop` interrupted training (the checkpoint is saved)."""
    launched = time.time()
    quiet_libraries()
    cfg = resolve_config(req)
    device = resolve_device(cfg.device)
    ws = check_workspace(req, cfg)
    check_vocabulary(cfg, req.force)

    from .guidance import make_guidance
    from .train import Trainer

    guidance = make_guidance(cfg.guidance, device)
    guidance.prepare(cfg.prompt, cfg.negative_prompt or None)
    trainer = Trainer.coarse(cfg, ws, device, guidance)
    if req.resume:
        trainer.resume()  # a corrupt or mismatched checkpoint stops here, before the workspace is touched
        print(f"resuming {ws.root} at step {trainer.step}")
    open_workspace(req, ws)
    ws.write_config(to_dict(cfg))

    stop = stop or StopFlag()
    restore = stop.install()
    start = time.time()
    try:
        train_stage(trainer, cfg.train.steps, req.quiet, stop, "dream")
    finally:
        restore()
    if stop():
        print(f"dream: {stop.reason or 'stop'} received; saved step {trainer.step} to {ws.last_checkpoint}. "
              f"Resume with: {resume_command(req, ws)}", file=sys.stderr)
        return RunOutcome(130, ws)
    print(f"trained {trainer.step} steps in {time.time() - start:.0f}s; workspace {ws.root}")
    export_start = time.time()
    exported = not req.no_export and export_results(trainer.rep, cfg, ws, req.quiet)
    summary = write_summary(ws, cfg, trainer.step, time.time() - export_start, time.time() - launched, exported=exported)
    return RunOutcome(0, ws, summary)
