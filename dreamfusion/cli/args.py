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
