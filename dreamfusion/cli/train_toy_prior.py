"""Train a bundled toy-world prior (seeded, resumable from its own checkpoint or its committed weights).

    python scripts/train_toy_prior.py [--out assets/toy_prior] [--steps N] [--camera-harmonics K]
                                      [--background-range LO,HI] [--backdrop COLOUR=LO,HI ...] [--smoke]
    python scripts/train_toy_prior.py --latent [--out assets/toy_latent_prior] [--vae-steps N] [--steps N] [--max-minutes M]

--latent trains the Stable Diffusion-format prior (toyworld/latent_prior.py): the VAE first, then
the U-Net on its latents. Steps are totals: a second call with larger ones continues the first, and
--max-minutes ends a leg early (the folder is written either way).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from .errors import run_cli


def _pixel(args: argparse.Namespace) -> str:
    from ..toyworld.train_prior import PriorTrainConfig, train_prior

    cfg = PriorTrainConfig(seed=args.seed, camera_harmonics=args.camera_harmonics or 1)
    if args.smoke:
        cfg = PriorTrainConfig(steps=30, batch_size=16, n_per_class=4, warmup=5, checkpoint_every=10, seed=args.seed, lr=2e-3,
                               camera_harmonics=cfg.camera_harmonics)
    cfg.steps = args.steps if args.steps is not None else cfg.steps
    cfg.batch_size = args.batch_size if args.batch_size is not None else cfg.batch_size
    if args.background_range is not None:
        cfg.background_grey_range = _parse_grey_range(args.background_range)
    cfg.backdrops = dict(_parse_backdrop(text) for text in args.backdrop)
    if cfg.steps <= 0 or cfg.batch_size <= 0 or cfg.camera_harmonics <= 0:
        raise ConfigError("--steps, --batch-size and --camera-harmonics must be positive")
    info = train_prior(Path(args.out or "assets/toy_prior"), cfg, progress=not args.quiet)
    return f"trained {info['steps']} steps in {info['train_seconds']:.0f}s, loss {info['first_loss']:.3f} -> {info['final_loss']:.3f}"


def _latent(args: argparse.Namespace) -> str:
    from ..toyworld.train_latent_prior import LatentPriorTrainConfig, train_latent_prior

    cfg = LatentPriorTrainConfig(seed=args.seed, text_from="assets/toy_prior")
    if args.camera_harmonics:
        cfg.camera_harmonics = args.camera_harmonics
    if args.smoke:
        cfg.vae_steps, cfg.steps, cfg.vae_batch_size, cfg.batch_size = 6, 6, 2, 4
        cfg.n_per_class, cfg.held_out_per_class, cfg.warmup, cfg.checkpoint_every = 1, 1, 2, 3
    for key in ("vae_steps", "steps", "batch_size"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if cfg.steps < 0 or cfg.vae_steps <= 0 or cfg.batch_size <= 0 or cfg.camera_harmonics <= 0:
        raise ConfigError("--vae-steps, --batch-size and --camera-harmonics must be positive, --steps at least 0")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise ConfigError("--max-minutes must be positive")
    info = train_latent_prior(Path(args.out or "assets/toy_latent_prior"), cfg, progress=not args.quiet, max_minutes=args.max_minutes)
    unet = f"U-Net {info['steps']}/{cfg.steps} steps in {info['unet_seconds']:.0f}s"
    if info["first_loss"] is not None:
        unet += f" (loss {info['first_loss']:.3f} -> {info['final_loss']:.3f})"
    return (f"VAE {info['vae_steps']}/{cfg.vae_steps} steps in {info['vae_seconds']:.0f}s, held-out PSNR "
            f"{info['held_out_psnr_db']:.1f} dB, latent scaling {info['scaling_factor']}; {unet}")


def _parse_grey_range(text: str, flag: str = "--background-range") -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} takes two greys LO,HI like 0.0,0.25, got {text!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ConfigError(f"{flag} needs 0 <= LO <= HI <= 1, got {text!r}")
    return (lo, hi)


def _parse_backdrop(text: str) -> tuple[str, tuple[float, float]]:
    from ..toyworld.vocabulary import COLOURS

    colour, _, greys = text.partition("=")
    if colour not in COLOURS or not greys:
        raise ConfigError(f"--backdrop takes COLOUR=LO,HI with a colour of {', '.join(COLOURS)}, got {text!r}")
    return colour, _parse_grey_range(greys, flag="--backdrop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", action="store_true", help="train the latent (Stable Diffusion-format) prior")
    parser.add_argument("--out", default=None, help="output folder (default assets/toy_prior, or assets/toy_latent_prior with --latent)")
    parser.add_argument("--steps", type=int, default=None, help="(total) U-Net steps")
    parser.add_argument("--vae-steps", type=int, default=None, help="(total) VAE steps, --latent only")
    parser.add_argument("--max-minutes", type=float, default=None, help="end this leg after M minutes, --latent only")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--camera-harmonics", type=int, default=None,
                        help="azimuth harmonics 1..K in the camera input (default 1 for the pixel prior, 4 for --latent)")
    parser.add_argument("--background-range", default=None, metavar="LO,HI",
                        help="the grey range of the backgrounds (pixel prior; default 0.3,0.9, as configs/toy.yaml draws)")
    parser.add_argument("--backdrop", action="append", default=[], metavar="COLOUR=LO,HI",
                        help="half of COLOUR's images over greys in LO,HI instead (pixel prior; repeatable)")
    parser.add_argument("--smoke", action="store_true", help="a tiny, fast run for tests")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if not args.latent and (args.vae_steps is not None or args.max_minutes is not None):
        raise ConfigError("--vae-steps and --max-minutes apply to --latent only")
    if args.latent and (args.background_range is not None or args.backdrop):
        raise ConfigError("--background-range and --backdrop apply to the pixel prior only (the latent prior keeps 0.3,0.9)")
    summary = _latent(args) if args.latent else _pixel(args)
    print(f"{summary}; wrote {args.out or ('assets/toy_latent_prior' if args.latent else 'assets/toy_prior')}")
    return 0


def console_main() -> int:
    """The `dreamfusion-train-prior` entry point."""
    return run_cli(main, prog="train_toy_prior")


if __name__ == "__main__":
    sys.exit(console_main())
