"""Checkpoint files: written atomically, read without executing pickled code.

A checkpoint is a nested dict of tensors, numbers, strings, lists and dicts, saved with torch.save
to a temporary file in the same folder and renamed over the target, so a crash mid-write leaves
the previous file intact. Loading uses `weights_only=True`: a checkpoint cannot run code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .utils.atomic import atomic_write  # noqa: F401 (re-exported: the checkpoint writer's own)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match this version of the toolkit."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


_FIX = "copy an earlier checkpoints/step_N.pt of the run over it, or train again"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, corrupt, or holding objects we refuse to unpickle
        raise CheckpointError(
            f"checkpoint {path} is corrupt, cut short or not a dreamfusion checkpoint ({type(err).__name__}); {_FIX}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a dreamfusion checkpoint; {_FIX}")
    return state
