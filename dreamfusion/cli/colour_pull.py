"""Where the prior pulls a toy object's colour when its shape is exactly right.

    python scripts/colour_pull.py --prompt "a blue sphere" [--steps 300] [--start palette|grey|R,G,B]
        [--normal-noise 1.5] [--opacity 0.8] [--lambertian-prob P] [--scan] [--config configs/toy.yaml] [key=value ...]
Renders the true object as the prior's training data shows it, with one albedo as the only
parameter, and runs the run's SDS (guidance scale, t range and schedule, view prompts, and
train.colour_t_max: the timesteps that teach colour) on it.
Prints the colour it settles at, its ΔE / ΔL* / ΔC* to the palette, and as its last line one JSON
object. With --scan it optimizes nothing and prints the prior's mean pull on the albedo at 0.4 to
1.1 times the palette colour instead: where that pull turns from brighter to darker, colour settles;
and its pull on the object's opacity at each of those colours: where it is negative the prior
fades even the exact object into the background.
Exit status: 0 when it settles within --tolerance ΔE of the palette (default 3), 1 when
not (--scan: 0), 2 bad flags or a prompt outside the toy world.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Sequence

from ..config import ConfigError
from ..eval.colour_pull import brightness_pull, colour_pull
from ..eval.fixed_point import toy_truth
from ..run_config import load_run_config
from ..utils.capabilities import resolve_device
from .args import add_common_options, parse_or_exit_code
from .errors import run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", required=True, help="a toy-world prompt, 'a <colour> <shape>'")
    p.add_argument("--config", default=None, help="the run's recipe, for its guidance, cameras and lights (default: dream.py's)")
    p.add_argument("--steps", type=int, default=300, help="SDS steps on the albedo (default 300)")
    p.add_argument("--start", default="palette", help="palette (default), grey, or R,G,B in [0, 1]")
    p.add_argument("--normal-noise", type=float, default=0.0, help="std of Gaussian noise on the shading normals")
    p.add_argument("--opacity", type=float, default=1.0, help="the object's opacity over the background (default 1)")
    p.add_argument("--lambertian-prob", type=float, default=None, help="lit renders' share (default: the config's train.lambertian_prob)")
    p.add_argument("--lr", type=float, default=0.03, help="Adam's rate on the albedo's logits")
    p.add_argument("--tolerance", type=float, default=3.0, help="the ΔE that counts as settling at the palette")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scan", action="store_true",
                   help="instead of optimizing, print the prior's mean pull on the albedo at 0.4-1.1 x the palette "
                        "colour (positive: brighter) and on its opacity (negative: the prior fades it), "
                        "averaged over --steps draws")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides, as dream.py takes them")
    add_common_options(p)
    return p


def parse_start(text: str) -> tuple[float, float, float] | None:
    if text == "palette":
        return None
    if text == "grey":
        return (0.5, 0.5, 0.5)
    try:
        rgb = tuple(float(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
        raise ConfigError(f"--start must be palette, grey or three numbers in [0, 1] like 0.5,0.2,0.1; got {text!r}")
    return rgb  # type: ignore[return-value]


def _main(argv: Sequence[str] | None) -> int:
    args = parse_or_exit_code(parser(), argv)
    if isinstance(args, int):
        return args
    shape, colour = toy_truth(args.prompt)  # refused before the prior is loaded
    start = parse_start(args.start)
    if args.steps <= 0:
        raise ConfigError(f"--steps must be positive, got {args.steps}")
    if not 0.0 < args.opacity <= 1.0:
        raise ConfigError(f"--opacity must be in (0, 1], got {args.opacity}")
    if args.normal_noise < 0:
        raise ConfigError(f"--normal-noise must be >= 0, got {args.normal_noise}")
    cfg = load_run_config(args.config, args.overrides, {"prompt": args.prompt.strip(), "seed": args.seed})
    lit = cfg.train.lambertian_prob if args.lambertian_prob is None else args.lambertian_prob
    if not 0.0 <= lit <= 1.0:
        raise ConfigError(f"--lambertian-prob must be in [0, 1], got {lit}")
    from ..guidance import make_guidance

    guidance = make_guidance(cfg.guidance, resolve_device(args.device))
    guidance.prepare(cfg.prompt, cfg.negative_prompt or None)
    if args.scan:
        return _scan(args, cfg, guidance, shape, colour, lit)
    pull = colour_pull(guidance, shape, colour, cfg.camera, cfg.light, start, args.steps, cfg.train.batch_size,
                       args.lr, lit, args.normal_noise, args.opacity, args.seed, cfg.train.colour_t_max,
                       _grey_range(cfg))
    print(f"{cfg.prompt}: albedo {tuple(pull.start)} -> {tuple(pull.final)} (palette {tuple(pull.truth)}); "
          f"ΔE {pull.delta_e_start:.1f} -> {pull.delta_e:.1f} (ΔL* {pull.delta_lightness:+.1f}, ΔC* {pull.delta_chroma:+.1f})")
    settled = pull.delta_e <= args.tolerance
    if not settled:
        print(f"colour pull: {cfg.prompt} settles ΔE {pull.delta_e:.1f} from the palette (allowed {args.tolerance:g})", file=sys.stderr)
    print(json.dumps({**asdict(pull), "normal_noise": args.normal_noise, "opacity": args.opacity,
                      "lambertian_prob": lit, "steps": args.steps, "settled": settled}))
    return 0 if settled else 1


def _grey_range(cfg) -> tuple[float, float]:
    """The run's random grey backgrounds (the prior's training backgrounds when the recipe matches it)."""
    if cfg.background.type != "random_grey":
        raise ConfigError(f"the colour pull draws grey backgrounds as the toy prior's data has them; "
                          f"background.type is {cfg.background.type!r}, use random_grey")
    return tuple(cfg.background.grey_range)


def _scan(args, cfg, guidance, shape: str, colour: str, lit: float) -> int:
    pulls = brightness_pull(guidance, shape, colour, cfg.camera, cfg.light, samples=args.steps,
                            batch_size=cfg.train.batch_size, lambertian_prob=lit, normal_noise=args.normal_noise,
                            seed=args.seed, background_grey_range=_grey_range(cfg))
    print(f"{cfg.prompt}: the prior's pulls on the true object at k x the palette colour")
    print("  k:       " + "  ".join(f"{k:6.1f}" for k in pulls.scales))
    print("  colour:  " + "  ".join(f"{p:+6.2f}" for p in pulls.colour) + "   (+: brighter)")
    print("  opacity: " + "  ".join(f"{p:+6.2f}" for p in pulls.opacity) + "   (+: holds the object, -: fades it)")
    print(json.dumps({"prompt": cfg.prompt, "scales": pulls.scales, "pulls": [round(p, 4) for p in pulls.colour],
                      "opacity_pulls": [round(p, 4) for p in pulls.opacity],
                      "lambertian_prob": lit, "normal_noise": args.normal_noise, "samples": args.steps}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _main(argv)


def console_main() -> int:
    """The `dreamfusion-colour-pull` entry point."""
    return run_cli(_main, prog="colour_pull")


if __name__ == "__main__":
    sys.exit(console_main())
