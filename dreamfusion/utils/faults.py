"""Fault injection for tests only: kill the process at a named point, as a power cut or `kill -9` would.

    DREAMFUSION_FAULT=train_step:6 python scripts/dream.py ...   # SIGKILL after the 6th training step

`fault_point(name)` counts how often this process reaches the point `name` and sends itself
SIGKILL on the N-th time when DREAMFUSION_FAULT is `name:N`. Points in the toolkit:

- `atomic_write`: a temporary file has been written (and cut to half its size, as an interrupted
  write leaves it) but not yet renamed over the target (checkpoint.py);
- `train_step`: a step's metrics line is on disk, its checkpoint (if due) is not (train.py).

Nothing here runs unless the variable is set; with it unset a point costs one dict lookup. Never set
it outside tests.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

ENV = "DREAMFUSION_FAULT"
_hits: dict[str, int] = {}


def fault_point(name: str, before_kill: Callable[[], None] | None = None) -> None:
    """SIGKILL this process the N-th time `name` is reached when DREAMFUSION_FAULT is `name:N`."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        if before_kill is not None:
            before_kill()
        os.kill(os.getpid(), signal.SIGKILL)
