"""Train the bundled toy-world prior (seeded, resumable from its own checkpoint).

    python scripts/train_toy_prior.py [--out assets/toy_prior] [--steps N] [--camera-harmonics K] [--smoke]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from ..config import ConfigError
from ..toyworld.train_prior import PriorTrainConfig, train_prior
from .errors import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="assets/toy_prior", help="output folder (diffusers format)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--camera-harmonics", type=int, default=1,
                        help="azimuth harmonics 1..K in the camera input (default 1: sin/cos of the azimuth only)")
    parser.add_argument("--smoke", action="store_true", help="a tiny, fast run for tests")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    cfg = PriorTrainConfig(seed=args.seed, camera_harmonics=args.camera_harmonics)
    if args.smoke:
        cfg = PriorTrainConfig(steps=30, batch_size=16, n_per_class=4, warmup=5, checkpoint_every=10, seed=args.seed, lr=2e-3,
                               camera_harmonics=args.camera_harmonics)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.batch_size is not None:
        cfg.batch_size = args.batch_size
    if cfg.steps <= 0 or cfg.batch_size <= 0 or cfg.camera_harmonics <= 0:
        raise ConfigError("--steps, --batch-size and --camera-harmonics must be positive")
    info = train_prior(Path(args.out), cfg, progress=not args.quiet)
    print(f"trained {info['steps']} steps in {info['train_seconds']:.0f}s, loss {info['first_loss']:.3f} -> {info['final_loss']:.3f}; wrote {args.out}")
    return 0


def console_main() -> int:
    """The `dreamfusion-train-prior` entry point."""
    return run_cli(main, prog="train_toy_prior")


if __name__ == "__main__":
    sys.exit(console_main())
