"""Start a stage from the true toy object and report how far its own SDS pulls it away.

    python scripts/fixed_point.py --prompt "a red cube" [--stage coarse|fine|both] [--steps 300]
        [--config configs/toy.yaml] [--out outputs/fixed_point] [--start-step N] [key=value ...]
Prints a table of ΔE, ΔL*, ΔC*, surface distance, normal angle and genus before and after, and as
its last line one JSON object. Exit status: 0 when every stage stayed within the tolerances
(ΔE 3, distance 0.005, normal angle 3 degrees, genus unchanged; --tolerance-scale widens them),
1 when something drifted beyond them (each named), 2 bad flags or a prompt outside the toy world.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Sequence

from ..config import ConfigError
from ..eval.fixed_point import MEASURES, TOLERANCES, run_fixed_point, toy_truth
from ..run_config import load_run_config
from ..utils.capabilities import resolve_device
from .args import add_common_options, parse_or_exit_code
from .errors import run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", required=True, help="a toy-world prompt, 'a <colour> <shape>'")
    p.add_argument("--config", default=None, help="the run's recipe (default: dream.py's, 3D Gaussians then the DMTet; configs/toy.yaml: the NeRF's)")
    p.add_argument("--stage", choices=("coarse", "fine", "both"), default="both")
    p.add_argument("--steps", type=int, default=300, help="SDS steps from the truth (default 300)")
    p.add_argument("--start-step", type=int, default=None,
                   help="the stage's step to start at (schedules as of it; default: its last --steps steps)")
    p.add_argument("--out", default="outputs/fixed_point", help="folder for the meshes, strips and fixed_point.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-steps", type=int, default=600, help="regression steps that put the truth into the representation")
    p.add_argument("--tolerance-scale", type=float, default=1.0, help="multiply the tolerances (default 1)")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides, as dream.py takes them")
    add_common_options(p)
    return p


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def _main(argv: Sequence[str] | None) -> int:
    args = parse_or_exit_code(parser(), argv)
    if isinstance(args, int):
        return args
    if args.tolerance_scale <= 0:
        raise ConfigError(f"--tolerance-scale must be positive, got {args.tolerance_scale}")
    toy_truth(args.prompt)  # refused before the prior is loaded
    if args.fit_steps <= 0:
        raise ConfigError(f"--fit-steps must be positive, got {args.fit_steps}")
    cfg = load_run_config(args.config, args.overrides, {"prompt": args.prompt.strip(), "seed": args.seed})
    device = resolve_device(args.device)
    stages = ("coarse", "fine") if args.stage == "both" else (args.stage,)
    tolerances = {k: v * args.tolerance_scale for k, v in TOLERANCES.items()}
    reports, failures = {}, {}
    from ..guidance import make_guidance

    guidance = make_guidance(cfg.guidance, device)
    guidance.prepare(cfg.prompt, cfg.negative_prompt or None)
    for stage in stages:
        report = run_fixed_point(cfg, stage, args.steps, f"{args.out}/{stage}", device, args.start_step, guidance, args.fit_steps)
        reports[stage], failures[stage] = report, report.failures(tolerances)
        print(f"\n{stage} stage, steps {report.start_step}-{report.start_step + report.steps} from the true {cfg.prompt[2:]} "
              f"({report.seconds:.0f} s):")
        print("| measure | truth | after | drift |\n|---|---|---|---|")
        for k in MEASURES:
            print(f"| {k} | {_fmt(report.before.get(k))} | {_fmt(report.after.get(k))} | {_fmt(report.drift.get(k))} |")
        for line in failures[stage]:
            print(f"fixed point: {stage}: {line}", file=sys.stderr)
    print(json.dumps({"prompt": cfg.prompt, "tolerances": tolerances,
                      **{s: {**asdict(r), "failures": failures[s]} for s, r in reports.items()}}))
    return 1 if any(failures.values()) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return _main(argv)


def console_main() -> int:
    """The `dreamfusion-fixed-point` entry point."""
    return run_cli(_main, prog="fixed_point")


if __name__ == "__main__":
    sys.exit(console_main())
