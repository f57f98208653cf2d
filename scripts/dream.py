#!/usr/bin/env python
"""Text to 3D: optimize a field with score distillation, then export a mesh and a turntable video.

    python scripts/dream.py --prompt "a red cube" [--negative TEXT] [--config configs/toy.yaml]
        [--steps N] [--seed S] [--workspace DIR] [--device auto|cpu|cuda] [--resume] [key=value ...]
"""
from __future__ import annotations

import argparse
import re
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamfusion.cli.errors import run_cli  # noqa: E402
from dreamfusion.config import ConfigError, to_dict  # noqa: E402
from dreamfusion.run_config import REPO_ROOT, RunConfig, load_run_config  # noqa: E402
from dreamfusion.utils.capabilities import resolve_device  # noqa: E402
from dreamfusion.workspace import Workspace  # noqa: E402


def slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "run"


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
    p.add_argument("--no-export", action="store_true", help="skip the mesh and video at the end")
    p.add_argument("--quiet", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=200 guidance.guidance_scale=7")
    return p.parse_args(argv)


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


def prepare_workspace(args: argparse.Namespace, cfg: RunConfig) -> Workspace:
    ws = Workspace(args.workspace or REPO_ROOT / "outputs" / slug(cfg.prompt))
    if args.resume:
        if not ws.last_checkpoint.is_file():
            raise ConfigError(f"--resume: {ws.root} has no checkpoint to resume from; drop --resume to start a new run")
        previous = ws.read_config().get("prompt")
        if previous != cfg.prompt:
            raise ConfigError(f"--resume: {ws.root} holds a run for {previous!r}, not {cfg.prompt!r}")
        return ws
    if ws.config_path.is_file() or ws.last_checkpoint.is_file():
        if not args.overwrite:
            previous = ws.read_config().get("prompt") if ws.config_path.is_file() else "?"
            raise ConfigError(
                f"{ws.root} already holds a run (prompt {previous!r}); pass --resume to continue it, "
                "--overwrite to replace it, or --workspace to choose another folder"
            )
        for sub in ("checkpoints", "validation", "mesh", "video"):
            shutil.rmtree(ws.root / sub, ignore_errors=True)
        ws.metrics_path.unlink(missing_ok=True)
    try:
        ws.root.mkdir(parents=True, exist_ok=True)
        probe = ws.root / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to workspace {ws.root} ({err.strerror}); choose another --workspace") from None
    return ws


def export_results(trainer, cfg: RunConfig, ws: Workspace, quiet: bool) -> None:
    from dreamfusion.export import ExportConfig, ExportError, export_mesh
    from dreamfusion.export.video import VideoConfig, render_turntable

    field = trainer.scene.field.eval()
    field.blob_scale = cfg.train.blob_scale(cfg.train.steps)
    e = cfg.export
    if e.mesh:
        try:
            result = export_mesh(field, ws.mesh_dir, ExportConfig(resolution=e.mesh_resolution, texture_size=e.texture_size), progress=not quiet)
            print(f"mesh: {len(result.files)} files in {ws.mesh_dir} ({result.n_faces} faces)")
        except ExportError as err:
            print(f"dream: mesh export skipped: {err}", file=sys.stderr)
    if e.video:
        vcfg = VideoConfig(frames=e.video_frames, resolution=e.video_resolution, modes=tuple(e.video_modes),
                           distance=cfg.camera.distance_range[1], fovy=sum(cfg.camera.fovy_range) / 2)
        paths = render_turntable(ws.video_dir, vcfg, field=field, bound=field.cfg.bound, progress=not quiet)
        print(f"video: {', '.join(p.name for p in paths)} in {ws.video_dir}")


def quiet_libraries() -> None:
    """diffusers/transformers chatter (weight-loading bars, accelerate hints) is not the user's business."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    cfg = resolve_config(args)
    device = resolve_device(cfg.device)
    ws = prepare_workspace(args, cfg)

    from dreamfusion.guidance import make_guidance
    from dreamfusion.train import Trainer

    guidance = make_guidance(cfg.guidance, device)
    guidance.prepare(cfg.prompt, cfg.negative_prompt or None)
    trainer = Trainer(cfg, ws, device, guidance)
    if args.resume:
        trainer.resume()
        print(f"resuming {ws.root} at step {trainer.step}")
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
              f"Resume with: python scripts/dream.py --prompt \"{cfg.prompt}\" --workspace {ws.root} --resume", file=sys.stderr)
        return 130
    print(f"trained {trainer.step} steps in {time.time() - start:.0f}s; workspace {ws.root}")
    if not args.no_export:
        export_results(trainer, cfg, ws, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="dream"))
