"""Render a workspace's turntable video (H.264 mp4) into DIR/video/, from the field or the exported mesh.

    python scripts/render_video.py --workspace DIR [--frames 120] [--fps 30] [--resolution 512]
        [--elevation 15] [--modes rgb,normal,depth,textureless] [--mesh] [--layout separate|side]
Exit status: 0 done, 1 rendering failed (one line on stderr says why and what to try), 2 bad flags.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch

from ..export import load_exported_mesh
from ..export.video import MODES, VideoConfig, orbit_of, render_turntable
from ..stages import export_dir, load_stage
from ..workspace import Workspace
from .args import add_common_options, parse_or_exit_code, subset_arg
from .errors import run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", required=True, help="the run's folder (config.yaml + checkpoints/last.pt)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint other than the stage's last.pt")
    p.add_argument("--stage", choices=("coarse", "fine"), default=None, help="which stage to render (default: the run's last)")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--resolution", type=int, default=512, help="frame width and height, even (default 512)")
    p.add_argument("--elevation", type=float, default=15.0, help="degrees above the ground plane (default 15)")
    p.add_argument("--distance", type=float, default=None, help="camera distance (default: the far end of the training range)")
    p.add_argument("--fovy", type=float, default=None, help="vertical field of view, degrees (default: mid training range)")
    p.add_argument("--modes", type=subset_arg(MODES), default=MODES, help="comma-separated: rgb,normal,depth,textureless")
    p.add_argument("--layout", choices=("separate", "side"), default="separate", help="one file per mode, or side by side")
    p.add_argument("--mesh", action="store_true", help="render DIR/mesh (run export_mesh.py first) instead of the field")
    p.add_argument("--background", choices=("scene", "white"), default="scene", help="rgb background of field renders")
    p.add_argument("--cache-resolution", type=int, default=128, help="voxels per axis of the field cache (default 128; more is sharper and slower)")
    add_common_options(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = parse_or_exit_code(parser(), argv)
    if isinstance(args, int):
        return args
    ws = Workspace(args.workspace)
    orbit = orbit_of(ws.scene_config().camera)  # ConfigError (exit 2) or a clear message if DIR is no workspace
    cfg = VideoConfig(
        frames=args.frames, fps=args.fps, resolution=args.resolution, elevation=args.elevation,
        distance=args.distance if args.distance is not None else orbit["distance"],
        fovy=args.fovy if args.fovy is not None else orbit["fovy"],
        modes=args.modes, layout=args.layout, cache_resolution=args.cache_resolution,
    )
    cfg.validate()
    stage = args.stage or ws.final_stage()
    out = export_dir(ws, stage)
    rep = None if args.mesh else load_stage(ws, stage, args.device, args.checkpoint)[0]
    volume = rep.volume() if rep is not None else None
    if volume is None:  # a mesh stage (the DMTet) or --mesh: the turntable shows the exported file
        paths = render_turntable(out.video_dir, cfg, mesh=load_exported_mesh(out.mesh_dir), progress=not args.quiet)
    else:
        background, scene_background = None, getattr(rep, "background", None)
        if args.background == "scene" and scene_background is not None:
            # a fresh seeded generator per frame: a random-colour background stays one colour, not a flicker
            background = lambda dirs: scene_background(dirs[None].to(args.device), torch.Generator().manual_seed(0))[0].cpu()  # noqa: E731
        paths = render_turntable(out.video_dir, cfg, field=volume, bound=rep.bound, background=background, progress=not args.quiet)
    print(f"wrote {', '.join(p.name for p in paths)} to {out.video_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="render_video")


def console_main() -> int:
    """The `dreamfusion-video` entry point."""
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
