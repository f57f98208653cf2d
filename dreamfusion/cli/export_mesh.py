"""Export a workspace's result as a textured mesh: DIR/mesh/model.obj (+ .mtl, albedo.png), model.glb, model.ply.

    python scripts/export_mesh.py --workspace DIR [--resolution 256] [--threshold auto|FLOAT]
        [--texture-size 1024] [--formats obj,glb,ply] [--decimate FACES] [--up z|y]
Exit status: 0 done, 1 the export failed (one line on stderr says why and what to try), 2 bad flags.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


from ..config import ConfigError
from ..export import FORMATS, ExportConfig, ExportError
from ..stages import export_dir, load_stage
from ..workspace import Workspace
from .args import add_common_options, parse_or_exit_code, subset_arg
from .errors import run_cli


def threshold_arg(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive density, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", required=True, help="the run's folder (config.yaml + checkpoints/last.pt)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint other than the stage's last.pt")
    p.add_argument("--stage", choices=("coarse", "fine"), default=None,
                   help="which stage to export (default: the run's last; a refined run's coarse mesh goes to DIR/coarse/mesh)")
    p.add_argument("--resolution", type=int, default=256, help="marching-cubes grid points per axis (default 256)")
    p.add_argument("--threshold", type=threshold_arg, default=None, metavar="auto|FLOAT",
                   help="density iso-level; auto (default) puts the surface at the field's skin (see --optical-depth)")
    p.add_argument("--optical-depth", type=float, default=ExportConfig.surface_optical_depth, metavar="TAU",
                   help="with auto: the surface lies where a head-on ray's optical depth reaches TAU "
                        f"(default {ExportConfig.surface_optical_depth}; 0.693 = the median of a render's weights, deeper in a soft field)")
    p.add_argument("--texture-size", type=int, default=1024, help="albedo texture width and height (default 1024)")
    p.add_argument("--formats", type=subset_arg(FORMATS), default=FORMATS, help="comma-separated: obj,glb,ply (default all)")
    p.add_argument("--smooth", type=float, default=ExportConfig.smooth, metavar="STD",
                   help="Gaussian std (world units) on the density before meshing; removes surfaces hidden inside (default 0.025, 0 = off)")
    p.add_argument("--decimate", type=int, default=None, metavar="FACES", help="simplify to at most FACES faces")
    p.add_argument("--up", choices=("z", "y"), default=None,
                   help="up axis of the OBJ and PLY (default: each upright in Blender, OBJ +y, PLY +z); the GLB is always +y, as glTF says")
    add_common_options(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = parse_or_exit_code(parser(), argv)
    if isinstance(args, int):
        return args
    cfg = ExportConfig(
        resolution=args.resolution, threshold=args.threshold, texture_size=args.texture_size,
        formats=args.formats, decimate=args.decimate, up=args.up, smooth=args.smooth, surface_optical_depth=args.optical_depth,
    )
    try:
        cfg.validate()
    except ExportError as err:
        raise ConfigError(str(err)) from None
    ws = Workspace(args.workspace)
    rep, stage = load_stage(ws, args.stage, args.device, args.checkpoint)
    out = export_dir(ws, stage)
    result = rep.export_mesh(out.mesh_dir, cfg, progress=not args.quiet)  # the fine stage exports its own mesh
    level = f", iso-level {result.level:.4g}" if stage == "coarse" else " (the DMTet's surface)"
    print(f"wrote {', '.join(p.name for p in result.files)} to {out.mesh_dir} "
          f"({result.n_vertices} vertices, {result.n_faces} faces{level})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="export_mesh")


def console_main() -> int:
    """The `dreamfusion-export` entry point."""
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
