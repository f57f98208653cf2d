"""Seeded random draws that work whatever device the run's generator and the tensors live on.

A run has one seeded `torch.Generator` (on the CPU, so a seed gives the same draws on every
machine), while its tensors may live on a GPU. PyTorch refuses `torch.rand(..., generator=cpu_gen,
device="cuda")`, so every draw in the package goes through these functions: they draw on the
generator's own device and move the result to the requested one. Without a generator they draw
directly on the target device (PyTorch's global RNG for it). A test checks that no other code in
the package passes a generator to a torch random function.
"""
from __future__ import annotations

from typing import Sequence

import torch

Device = torch.device | str | None


def _source(generator: torch.Generator | None, device: Device) -> torch.device | str | None:
    return generator.device if generator is not None else device


def rand(shape: Sequence[int], generator: torch.Generator | None = None, device: Device = None,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    """U[0, 1) of `shape` on `device`, drawn from `generator` on its own device."""
    out = torch.rand(tuple(shape), generator=generator, device=_source(generator, device), dtype=dtype)
    return out.to(device) if device is not None else out


def randn(shape: Sequence[int], generator: torch.Generator | None = None, device: Device = None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """N(0, 1) of `shape` on `device`, drawn from `generator` on its own device."""
    out = torch.randn(tuple(shape), generator=generator, device=_source(generator, device), dtype=dtype)
    return out.to(device) if device is not None else out


def randint(low: int, high: int, shape: Sequence[int], generator: torch.Generator | None = None,
            device: Device = None) -> torch.Tensor:
    """Integers in [low, high) of `shape` (int64) on `device`, drawn from `generator` on its own device."""
    out = torch.randint(low, high, tuple(shape), generator=generator, device=_source(generator, device))
    return out.to(device) if device is not None else out
