"""Swap a parameter in an Adam optimizer for one with other rows, carrying the moments along.

A representation whose size changes in training (3D Gaussians densify and prune) makes new
tensors; each new row takes the Adam moments of an old row (a clone, a survivor) or starts at
zero (a split's children, as 3DGS does). The step counter stays the parameter's.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def replace_rows(optimizer: torch.optim.Optimizer, old: torch.nn.Parameter, new: torch.nn.Parameter,
                 source: torch.Tensor) -> None:
    """Put `new` in place of `old` in its group. `source` (M,) long, M = new.shape[0]: the row of
    `old` whose moments row i of `new` takes, or -1 for zero moments."""
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
                state = optimizer.state.pop(old, None)
                if state:
                    kept = source >= 0
                    rows = source.clamp_min(0)
                    moved = {}
                    for key, value in state.items():
                        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == old.shape[0]:
                            moved[key] = torch.where(kept.view(-1, *([1] * (value.dim() - 1))), value[rows], torch.zeros_like(value[rows]))
                        else:
                            moved[key] = value
                    optimizer.state[new] = moved
                return
    raise KeyError("the parameter to replace is not in the optimizer")
