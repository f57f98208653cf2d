"""Checkpoint files: written atomically, read without executing pickled code.

A checkpoint is a nested dict of tensors, numbers, strings, lists and dicts, saved with torch.save
to a temporary file in the same folder and renamed over the target, so a crash mid-write leaves
the previous file intact. Loading uses `weights_only=True`: a checkpoint cannot run code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .utils.faults import fault_point


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match this version of the toolkit."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), fsync, then rename tmp over `path` (same folder, so rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it a normal file's mode
    try:
        write(tmp)
        fault_point("atomic_write", lambda: os.truncate(tmp, os.path.getsize(tmp) // 2))  # tests: a kill mid-write
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
