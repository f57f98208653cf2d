"""argparse value types shared by the scripts."""
from __future__ import annotations

import argparse
from typing import Callable, Sequence


def subset_arg(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated, non-empty subset of `choices` (e.g. --formats obj,glb)."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(s.strip() for s in text.split(",") if s.strip())
        if not items or any(s not in choices for s in items):
            raise argparse.ArgumentTypeError(f"must be a comma-separated subset of {','.join(choices)}, got {text!r}")
        return items

    return parse


def add_common_options(p: argparse.ArgumentParser, device_default: str = "cpu") -> None:
    """--device, --quiet and --debug, as every script spells them."""
    p.add_argument("--device", default=device_default, help=f"torch device for the field (default {device_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def parse_or_exit_code(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or argparse's exit code (0 for --help, 2 for bad flags; message already printed)."""
    try:
        return p.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """Where the runs go (dreamfusion/batch): a local Ray instance, or a cluster, and what each asks for."""
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="a running Ray cluster (HOST:PORT from `ray start --head`, ray://HOST:PORT, or auto); default: a local instance")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side on a local instance (each gets cores/jobs threads)")
    p.add_argument("--cpus-per-run", type=int, default=None, metavar="N",
                   help="CPU cores each run asks Ray for (default: cores/jobs locally, 1 a run on a GPU cluster, else 2)")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="G",
                   help="GPUs each run asks Ray for (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--retries", type=int, default=2, help="times a run whose worker was lost is retried (it resumes; default 2)")


def cluster_resources(args: argparse.Namespace):
    """The batch.Resources of add_cluster_options' flags, checked, and --ray-address reached
    (ConfigError: one sentence), before any progress bar or run starts."""
    from ..batch import Resources
    from ..batch.cluster import check_reachable
    from ..config import ConfigError

    if args.jobs <= 0:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.cpus_per_run is not None and args.cpus_per_run <= 0:
        raise ConfigError(f"--cpus-per-run must be at least 1, got {args.cpus_per_run}")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        raise ConfigError(f"--gpus-per-run must be 0 or more, got {args.gpus_per_run}")
    if args.retries < 0:
        raise ConfigError(f"--retries must be 0 or more, got {args.retries}")
    if args.ray_address:
        check_reachable(args.ray_address)
    return Resources(cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, jobs=args.jobs, retries=args.retries)
