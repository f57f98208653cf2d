"""Render the initial field from 8 views (rgb and normals) into PNGs: a check that the scene works.

    python scripts/render_demo.py --out demo [--resolution 128] [--device auto] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


from ..cameras import make_cameras
from ..config import ConfigError
from ..render.shading import LightConfig, sample_lights
from ..scene import SceneConfig, build_scene
from ..utils.capabilities import resolve_device
from ..utils.images import normal_to_rgb, save_png
from .errors import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.resolution <= 0:
        raise ConfigError(f"--resolution must be positive, got {args.resolution}")
    device = resolve_device(args.device)
    scene = build_scene(SceneConfig(), device=device, seed=args.seed)
    scene.renderer.eval()
    scene.renderer.update_occupancy(step=0)  # skip the empty space around the initial blob
    n = 8
    full = lambda v: torch.full((n,), float(v), device=device)  # noqa: E731
    cams = make_cameras(full(20.0), torch.arange(n, device=device) * 45.0, full(2.0), full(45.0))
    lights = sample_lights(LightConfig(position_perturb=0.0), cams.position)
    with torch.no_grad():
        out = scene.renderer(cams, args.resolution, args.resolution, shading="lambertian", light_positions=lights)
    out_dir = Path(args.out)
    for i, label in enumerate(cams.view_labels()):
        az = int(cams.azimuth[i].item())
        save_png(out_dir / f"view{i}_az{az:+04d}_{label}_rgb.png", out.rgb[i])
        save_png(out_dir / f"view{i}_az{az:+04d}_{label}_normal.png", normal_to_rgb(out.normal[i], out.opacity[i]))
    print(f"wrote {2 * n} images to {out_dir}")
    return 0


def console_main() -> int:
    """The `dreamfusion-demo` entry point."""
    return run_cli(main, prog="render_demo")


if __name__ == "__main__":
    sys.exit(console_main())
