"""Run-time detection of optional accelerators and CUDA-only packages.

CUDA packages (tinycudann, nerfacc's kernels) are never imported at module top level: a CPU user
must be able to import every module of the toolkit. Each check imports lazily and caches.
"""
from __future__ import annotations

import functools

import torch

from ..config import ConfigError


@functools.lru_cache(maxsize=None)
def tinycudann_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a build for another CUDA/arch raising at import
        return False
    return True


@functools.lru_cache(maxsize=None)
def nerfacc_cuda_available() -> bool:
    """nerfacc imports and CUDA is present (its kernels compile on first use)."""
    if not torch.cuda.is_available():
        return False
    try:
        import nerfacc  # noqa: F401
    except Exception:
        return False
    return True


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → cuda when available, else cpu. Asking for cuda where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
