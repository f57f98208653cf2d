#!/usr/bin/env python
"""Text to 3D: optimize a field with score distillation, then export a mesh and a turntable video.

    python scripts/dream.py --prompt "a red cube" [--negative TEXT] [--config configs/toy.yaml]
        [--steps N] [--seed S] [--workspace DIR] [--device auto|cpu|cuda] [--resume] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamfusion.checkpoint import atomic_write  # noqa: E402
from dreamfusion.cli.errors import run_cli  # noqa: E402
from dreamfusion.config import ConfigError, to_dict  # noqa: E402
from dreamfusion.guidance.vocabulary import closed_vocabulary, unknown_words  # noqa: E402
from dreamfusion.run_config import REPO_ROOT, RunConfig, load_run_config  # noqa: E402
from dreamfusion.utils.capabilities import resolve_device  # noqa: E402
from dreamfusion.workspace import Workspace, slug  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", required=True, help='what to make, e.g. "a red cube"')
    p.add_argument("--negative", default=None, help="negative prompt")
    p.add_argument("--config", default=None, help="YAML config (default: configs/toy.yaml, the bundled prior)")
    p.add_argument("--steps", type=int, default=None, help="optimization steps (train.steps)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workspace", default=None, help="run folder (default: outputs/<prompt-slug>)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from the workspace's last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in the workspace")
    p.add_argument("--force", action="store_true", help="run even with words the bundled prior has never seen")
    p.add_argument("--no-export", action="store_true", help="skip the mesh and video at the end")
    p.add_argument("--quiet", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=200 guidance.guidance_scale=7")
    return p.parse_intermixed_args(argv)  # key=value overrides may come before or after flags


def resolve_config(args: argparse.Namespace) -> RunConfig:
    if not args.prompt.strip():
        raise ConfigError('--prompt is empty; say what to make, e.g. --prompt "a red cube"')
    overrides = list(args.overrides)
    extra = {"prompt": args.prompt.strip()}
    if args.negative is not None:
        extra["negative_prompt"] = args.negative
    for key, value in (("seed", args.seed), ("device", args.device)):
        if value is not None:
            extra[key] = value
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    return load_run_config(args.config, overrides, extra)


def check_workspace(args: argparse.Namespace, cfg: RunConfig) -> Workspace:
    """Every reason to refuse the workspace, found before anything is loaded or written."""
    ws = Workspace(args.workspace or REPO_ROOT / "outputs" / slug(cfg.prompt))
    if ws.root.exists() and not ws.root.is_dir():
        raise ConfigError(f"workspace {ws.root} is a file, not a folder; choose another --workspace")
    if args.resume:
        if not ws.last_checkpoint.is_file():
            raise ConfigError(f"--resume: {ws.root} has no checkpoint to resume from; drop --resume to start a new run")
        previous = ws.read_config().get("prompt")
        if previous != cfg.prompt:
            raise ConfigError(f"--resume: {ws.root} holds a run for {previous!r}, not {cfg.prompt!r}")
    elif (ws.config_path.is_file() or ws.last_checkpoint.is_file()) and not args.overwrite:
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


def open_workspace(args: argparse.Namespace, ws: Workspace) -> None:
    """The first write, after every check has passed: clear a replaced run (--overwrite), create the folder."""
    if args.overwrite and not args.resume:
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


def resume_command(args: argparse.Namespace, ws: Workspace) -> str:
    """The command that continues this run: the same prompt, config, overrides and flags, plus --resume."""
    parts = ["python", "scripts/dream.py", "--prompt", args.prompt]
    for flag, value in (("--negative", args.negative), ("--config", args.config), ("--steps", args.steps),
                        ("--seed", args.seed), ("--device", args.device)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--workspace", str(ws.root), "--resume"]
    parts += [flag for flag, on in (("--force", args.force), ("--no-export", args.no_export), ("--quiet", args.quiet)) if on]
    return shlex.join(parts + list(args.overrides))


def check_vocabulary(cfg: RunConfig, force: bool) -> None:
    """A closed-vocabulary prior (the bundled one) scores unseen words as noise: refuse them unless --force."""
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
    print(f"dream: warning: the guidance model has never seen {words}; running anyway (--force)", file=sys.stderr)


def export_results(trainer, cfg: RunConfig, ws: Workspace, quiet: bool) -> bool:
    """The mesh and the video; an empty field skips each with the reason (training is kept, not failed).
    Returns whether everything asked for was written."""
    from dreamfusion.export import ExportError, export_mesh, load_exported_mesh
    from dreamfusion.export.video import render_turntable

    field = trainer.scene.field.eval()  # its blob scale and active levels are those of the last checkpoint
    e, done, mesh_written = cfg.export, True, False
    if e.mesh:
        try:
            result = export_mesh(field, ws.mesh_dir, cfg.mesh_export_config(), progress=not quiet)
            mesh_written = True
            print(f"mesh: {len(result.files)} files in {ws.mesh_dir} ({result.n_faces} faces)")
        except ExportError as err:
            done = False
            print(f"dream: mesh export skipped: {err} (the checkpoint is kept: scripts/export_mesh.py --workspace {ws.root} retries)", file=sys.stderr)
    if e.video:
        try:
            # the exported file when there is one (what the user gets, and 5-10x faster); else the field
            source = {"mesh": load_exported_mesh(ws.mesh_dir)} if e.video_source == "mesh" and mesh_written else {"field": field}
            paths = render_turntable(ws.video_dir, cfg.video_config(), bound=field.cfg.bound, progress=not quiet, **source)
            print(f"video: {', '.join(p.name for p in paths)} in {ws.video_dir} (from the {next(iter(source))})")
        except ExportError as err:
            done = False
            print(f"dream: video skipped: {err} (the checkpoint is kept: scripts/render_video.py --workspace {ws.root} retries)", file=sys.stderr)
    return done


def quiet_libraries() -> None:
    """diffusers/transformers chatter (weight-loading bars, accelerate hints) is not the user's business."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    launched = time.time()
    args = parse_args(argv)
    quiet_libraries()
    cfg = resolve_config(args)
    device = resolve_device(cfg.device)
    ws = check_workspace(args, cfg)
    check_vocabulary(cfg, args.force)

    from dreamfusion.guidance import make_guidance
    from dreamfusion.train import Trainer

    guidance = make_guidance(cfg.guidance, device)
    guidance.prepare(cfg.prompt, cfg.negative_prompt or None)
    trainer = Trainer(cfg, ws, device, guidance)
    if args.resume:
        trainer.resume()  # a corrupt or mismatched checkpoint stops here, before the workspace is touched
        print(f"resuming {ws.root} at step {trainer.step}")
    open_workspace(args, ws)
    ws.write_config(to_dict(cfg))

    interrupted: list[str] = []

    def on_signal(signum, _frame):
        interrupted.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    from tqdm import tqdm

    bar = tqdm(total=cfg.train.steps, initial=trainer.step, desc="dream", disable=args.quiet, unit="step")
    start = time.time()

    def on_step(result) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{result.metrics['sds']:.3g}", t=f"{result.metrics['t']:.2f}")
        if args.quiet and (result.step % 50 == 0 or result.step == cfg.train.steps):
            rate = result.step / max(1e-9, time.time() - start)
            print(f"step {result.step}/{cfg.train.steps} sds {result.metrics['sds']:.4g} ({rate:.2f} step/s)", flush=True)

    try:
        trainer.run(on_step=on_step, stop=lambda: bool(interrupted))
    finally:
        bar.close()
        for s, handler in old.items():
            signal.signal(s, handler)
    if interrupted:
        print(f"dream: {interrupted[0]} received; saved step {trainer.step} to {ws.last_checkpoint}. "
              f"Resume with: {resume_command(args, ws)}", file=sys.stderr)
        return 130
    train_seconds = time.time() - start
    print(f"trained {trainer.step} steps in {train_seconds:.0f}s; workspace {ws.root}")
    export_start = time.time()
    exported = not args.no_export and export_results(trainer, cfg, ws, args.quiet)
    write_summary(ws, cfg, trainer.step, time.time() - export_start, time.time() - launched, exported=exported)
    return 0


def write_summary(ws: Workspace, cfg: RunConfig, steps: int, export_seconds: float, wall_seconds: float, exported: bool) -> None:
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


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="dream"))
