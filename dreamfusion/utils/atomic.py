"""Atomic file writes: a reader never sees half a file, a kill mid-write leaves the old one. Torch-free."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .faults import fault_point


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
