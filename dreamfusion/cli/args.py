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
