"""Adaptive density control (3DGS): clone small Gaussians and split large ones where the view-space
gradient is large, prune the transparent and the huge.

Pure functions of the parameter tensors: they return the new tensors and, for each new row, the old
row whose optimizer moments it keeps (-1: new, zero moments), so the representation can swap its
parameters in the optimizer (utils/optimizer_surgery.py).
"""
from __future__ import annotations

import math

import torch

from ..utils import random
from .config import GaussianConfig
from .model import quat_to_rotation

SPLIT_CHILDREN = 2
SPLIT_SHRINK = 0.8 * SPLIT_CHILDREN  # 3DGS: a split's children are 1/1.6 of the parent's size


@torch.no_grad()
def densify_and_prune(params: dict[str, torch.Tensor], grad: torch.Tensor, cfg: GaussianConfig, extent: float,
                      generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, int]]:
    """(new parameter tensors, source rows (M,) long, counts {cloned, split, pruned}) after one round.

    grad (N,): each Gaussian's mean view-space gradient norm since the last round."""
    n = grad.shape[0]
    scale = params["log_scales"].exp().max(-1).values
    want = grad >= cfg.grad_threshold
    room = max(0, cfg.max_gaussians - n)
    if int(want.sum()) > room:  # the largest gradients first, within max_gaussians
        top = torch.topk(torch.where(want, grad, torch.full_like(grad, -1.0)), room).indices
        want = torch.zeros_like(want).index_fill_(0, top, True)
    small = scale <= cfg.percent_dense * extent
    clone, split = want & small, want & ~small
    rows = torch.arange(n, device=grad.device)
    keep_rows = rows[~split]
    clone_rows, split_rows = rows[clone], rows[split]
    parent = split_rows.repeat(SPLIT_CHILDREN)
    out = {k: torch.cat([v[keep_rows], v[clone_rows], v[parent]]) for k, v in params.items()}
    if parent.numel():  # children drawn from the parent's Gaussian, smaller
        s = params["log_scales"][parent].exp()
        offset = (quat_to_rotation(params["quats"][parent]) @ (random.randn(s.shape, generator, s.device) * s).unsqueeze(-1)).squeeze(-1)
        k = keep_rows.numel() + clone_rows.numel()
        out["means"][k:] = params["means"][parent] + offset
        out["log_scales"][k:] = params["log_scales"][parent] - math.log(SPLIT_SHRINK)
    source = torch.cat([keep_rows, torch.full((clone_rows.numel() + parent.numel(),), -1, device=grad.device, dtype=torch.long)])
    # prune the transparent and the huge (the new ones too)
    opacity = torch.sigmoid(out["opacity_logits"])
    alive = (opacity >= cfg.min_opacity) & (out["log_scales"].exp().max(-1).values <= cfg.max_scale)
    out = {k: v[alive] for k, v in out.items()}
    counts = {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": int((~alive).sum())}
    return out, source[alive], counts
