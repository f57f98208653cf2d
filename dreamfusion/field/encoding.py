"""Multiresolution hash-grid encoding (Instant-NGP), pure PyTorch, with tinycudann on CUDA.

Configured with tinycudann's own Grid keys, so one config drives both implementations. The pure
PyTorch version follows tinycudann exactly: level l has scale `base * s**l - 1` and resolution
`ceil(scale) + 1`; levels whose grid fits the table are indexed densely, the others through the
coherent prime hash (1, 2654435761, 805459861); parameters are initialised U(-1e-4, 1e-4).

Why it is fast on CPU: all levels are computed at once (levels are a tensor dimension, the tables
one concatenated parameter), and the 8 corner indices and weights come from per-axis pairs combined
by broadcasting. Points that need no gradient themselves (ray samples, colour lookups: nearly every
call) are laid out points-last, so each elementwise op runs over long contiguous rows; their
analytic normals come from the weights' slopes written out (`forward_with_jacobian`), not from a
double backward. Points that do need a gradient take one `embedding_bag` call whose
backward is written out by hand with differentiable ops, so second derivatives work there too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..config import ConfigError, key_of, require_positive
from ..utils.capabilities import failure_reason, tinycudann_available
from ..utils import random

PRIMES = (1, 2654435761, 805459861)
# The same primes as int32 bit patterns: int32 multiplication wraps modulo 2^32 like uint32.
_PRIME1 = PRIMES[1] - 2**32
_PRIME2 = PRIMES[2]


@dataclass
class HashGridConfig:
    """tinycudann's Grid encoding keys (see its DOCUMENTATION.md)."""

    otype: Literal["HashGrid", "Grid"] = "HashGrid"
    type: Literal["Hash"] = "Hash"
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.447269237440378  # finest level 4096 with 16 levels
    interpolation: Literal["Linear"] = "Linear"

    def validate(self, prefix: str = "") -> None:
        for name in ("n_levels", "n_features_per_level", "base_resolution"):
            require_positive(prefix, name, getattr(self, name))
        if not 1 <= self.log2_hashmap_size <= 30:
            raise ConfigError(f"{key_of(prefix, 'log2_hashmap_size')} must be in [1, 30], got {self.log2_hashmap_size}")
        if self.per_level_scale < 1.0:
            raise ConfigError(f"{key_of(prefix, 'per_level_scale')} must be >= 1, got {self.per_level_scale}")

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level

    def tcnn_dict(self) -> dict:
        return dict(
            otype="HashGrid",
            n_levels=self.n_levels,
            n_features_per_level=self.n_features_per_level,
            log2_hashmap_size=self.log2_hashmap_size,
            base_resolution=self.base_resolution,
            per_level_scale=self.per_level_scale,
            interpolation=self.interpolation,
        )


def level_layout(cfg: HashGridConfig) -> tuple[list[float], list[int], list[int], list[bool]]:
    """Per level: scale, resolution, table size (params / F) and whether indexing is dense."""
    scales, resolutions, sizes, dense = [], [], [], []
    max_size = 2**cfg.log2_hashmap_size
    for level in range(cfg.n_levels):
        scale = cfg.base_resolution * cfg.per_level_scale**level - 1.0
        res = int(math.ceil(scale)) + 1
        full = res**3
        size = min(max_size, (full + 7) // 8 * 8)  # tinycudann aligns tables to 8 entries
        scales.append(scale)
        resolutions.append(res)
        sizes.append(size)
        dense.append(full <= size)
    return scales, resolutions, sizes, dense


class _Interpolate(torch.autograd.Function):
    """out[m] = sum_k w[m, k] * table[idx[m, k]]: embedding_bag forward, twice-differentiable backward."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table, idx, w)
        return F.embedding_bag(idx, table, per_sample_weights=w, mode="sum")

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        table, idx, w = ctx.saved_tensors  # table (P, F), idx (M, 8), w (M, 8); grad_out (M, F)
        grad_table = grad_w = None
        if ctx.needs_input_grad[0]:
            contrib = (grad_out.unsqueeze(1) * w.unsqueeze(-1)).reshape(-1, table.shape[1])
            grad_table = torch.zeros_like(table).index_add(0, idx.reshape(-1), contrib)
        if ctx.needs_input_grad[2]:
            # index_select, not F.embedding: the same gather, but its backward (index_add, taken by the
            # second-order pass of analytic normals) is ~5x faster than embedding_dense_backward on CPU.
            corners = table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[1])  # (M, 8, F)
            grad_w = (corners * grad_out.unsqueeze(1)).sum(-1)
        return grad_table, None, grad_w


class _WeightCorners(torch.autograd.Function):
    """out[c, f, m] = sum_k weights[c, k, m] * corners[f, k, m], the weights constant: one fused
    multiply-add per corner over contiguous rows, with no (C, F, 8, M) temporary to write and read back."""

    @staticmethod
    def forward(ctx, corners: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # (F, 8, M), (C, 8, M)
        ctx.save_for_backward(weights)
        out = corners.new_zeros(weights.shape[0], corners.shape[0], corners.shape[2])
        for k in range(weights.shape[1]):
            out.addcmul_(weights[:, k].unsqueeze(1), corners[:, k].unsqueeze(0))
        return out  # (C, F, M)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (weights,) = ctx.saved_tensors
        grad = grad_out.new_empty(grad_out.shape[1], weights.shape[1], grad_out.shape[2])
        for k in range(weights.shape[1]):
            torch.sum(weights[:, k].unsqueeze(1) * grad_out, dim=0, out=grad[:, k])
        return grad, None


class HashGridEncoding(nn.Module):
    """Pure-PyTorch hash grid. Input (N, 3) in [0, 1]; output (N, n_levels * F)."""

    def __init__(self, cfg: HashGridConfig, seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        scales, resolutions, sizes, dense = level_layout(cfg)
        offsets = [0]
        for s in sizes[:-1]:
            offsets.append(offsets[-1] + s)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.int32), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        # Resolution grows with the level, so the densely indexed levels are a prefix.
        self.n_dense = sum(dense)
        self.register_buffer("dense_sizes", torch.tensor(sizes[: self.n_dense], dtype=torch.int32), persistent=False)
        self.register_buffer("hash_masks", torch.tensor(sizes[self.n_dense :], dtype=torch.int32) - 1, persistent=False)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        table = (random.rand((sum(sizes), cfg.n_features_per_level), gen) * 2 - 1) * 1e-4
        self.table = nn.Parameter(table)
        self.register_buffer("_slope", torch.tensor([-1.0, 1.0]), persistent=False)
        # A state dict in tinycudann's layout loads too (one reshape; see TcnnHashGridEncoding).
        self.register_load_state_dict_pre_hook(lambda m, state, prefix, *_: canonical_table(state, prefix, m.cfg))

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def corner_indices_and_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat table indices (N, L, 8) and trilinear weights (N, L, 8) for points (N, 3) in [0, 1].

        Corner k = 4*bx + 2*by + bz (bits: low/high corner per axis), in the order broadcasting gives.
        """
        n = x.shape[0]
        pos = x.unsqueeze(1) * self.scales.view(1, -1, 1) + 0.5  # (N, L, 3)
        grid = torch.floor(pos)
        frac = pos - grid
        wpair = torch.stack([1.0 - frac, frac], dim=-1)  # (N, L, 3, 2)
        w = wpair[:, :, 0, :, None, None] * wpair[:, :, 1, None, :, None] * wpair[:, :, 2, None, None, :]
        idx = self._corner_indices(grid.detach().to(torch.int32).permute(2, 1, 0))  # (8, L, N)
        return idx.permute(2, 1, 0).contiguous(), w.reshape(n, self.cfg.n_levels, 8)

    def _corner_indices(self, low: torch.Tensor) -> torch.Tensor:
        """Flat table indices (8, L, N), int64, of the 8 corners of each point's cell, from the cells'
        low corners (3, L, N) int32. Corner k = 4*bx + 2*by + bz (bits: low/high corner per axis)."""
        levels, n, nd = low.shape[1], low.shape[2], self.n_dense
        corner = torch.stack([low, low + 1], dim=1)  # (3, 2, L, N): per axis, the low and high corner
        cx, cy, cz = corner[0][:, None, None], corner[1][None, :, None], corner[2][None, None, :]
        # int32 arithmetic: indices stay below 2^31, and the hash wraps modulo 2^32 as tinycudann's uint32.
        idx = torch.empty(2, 2, 2, levels, n, dtype=torch.int32, device=low.device)
        if nd > 0:
            res = self.resolutions[:nd].view(-1, 1)
            dense = cx[..., :nd, :] + (cy[..., :nd, :] + cz[..., :nd, :] * res) * res
            # The +1 corner of the last cell reaches `res`; tinycudann wraps such indices modulo the table.
            idx[..., :nd, :] = torch.remainder(dense, self.dense_sizes.view(-1, 1))
        if nd < levels:
            h = cx[..., nd:, :] ^ (cy[..., nd:, :] * _PRIME1) ^ (cz[..., nd:, :] * _PRIME2)
            idx[..., nd:, :] = h & self.hash_masks.view(-1, 1)
        # int64 for the gather/scatter: CPU index kernels are several times slower on int32 indices.
        return idx.view(8, levels, n).long() + self.offsets.view(1, -1, 1)

    def _corner_planes(self, x: torch.Tensor, slopes: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Table indices (8 * L * N,) and weights (C, 8, L * N) of points (N, 3) in [0, 1], laid out
        points-last: corner-major, then level, then point, so each elementwise op runs over long
        contiguous rows instead of broadcasting over size-2 dimensions. C = 1 (the trilinear weights),
        or 4 with `slopes` (also their derivatives in x, y and z). Constants: no gradient to x."""
        n, levels = x.shape[0], self.cfg.n_levels
        with torch.no_grad():
            pos = x.float().T.unsqueeze(1) * self.scales.view(1, -1, 1) + 0.5  # (3, L, N)
            grid = torch.floor(pos)
            frac = pos - grid
            idx = self._corner_indices(grid.to(torch.int32)).view(-1)
            pair = torch.stack([1.0 - frac, frac], dim=1)  # (3, 2, L, N)
            px, py, pz = pair[0][:, None, None], pair[1][None, :, None], pair[2][None, None, :]
            rows = [px * py * pz]
            if slopes:
                slope = self._slope.to(pair.dtype).view(2, 1, 1) * self.scales.view(-1, 1)  # d(1 - f)/dx, df/dx
                rows += [slope[:, None, None] * py * pz, px * slope[None, :, None] * pz, px * py * slope[None, None, :]]
            return idx, torch.stack(rows).view(len(rows), 8, levels * n)

    def _weighted_corners(self, x: torch.Tensor, slopes: bool) -> torch.Tensor:
        """(C, F, L, N): the C weightings of each point's 8 corner features (see _corner_planes)."""
        n, levels, feats = x.shape[0], self.cfg.n_levels, self.cfg.n_features_per_level
        idx, weights = self._corner_planes(x, slopes)
        # one gather per feature column: faster than gathering rows and transposing them (forward and backward)
        corners = torch.stack([self.table[:, f].index_select(0, idx) for f in range(feats)]).view(feats, 8, levels * n)
        return _WeightCorners.apply(corners, weights).view(weights.shape[0], feats, levels, n)

    def forward_with_jacobian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoding (N, L*F) and its derivative in x, (3, N, L*F), for points (N, 3) in [0, 1]
        that need no gradient themselves (ray samples).

        Analytic normals without a double backward: the trilinear weights' slopes in x are written out
        (d/dx of (1 - fx, fx) is (-1, +1), times the level's scale), so the encoding and its three
        partial derivatives are four weightings of the same 8 gathered corners, all linear in the
        table. The parameters' gradients then need one first-order backward (a scatter into the table),
        where autograd's normals differentiate the hand-written backward of `_Interpolate` again.
        Equal to autograd's derivative to float rounding (tests/test_field.py).
        """
        if x.requires_grad:
            raise ValueError("forward_with_jacobian is for points that need no gradient (use autograd for those)")
        n = x.shape[0]
        out = self._weighted_corners(x, slopes=True)  # value, d/dx, d/dy, d/dz
        enc = out[0].permute(2, 1, 0).reshape(n, self.output_dim)
        jac = out[1:].permute(0, 3, 2, 1).reshape(3, n, self.output_dim)
        return enc, jac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not x.requires_grad:  # ray samples, colour lookups: the points-last layout
            return self._weighted_corners(x, slopes=False)[0].permute(2, 1, 0).reshape(n, self.output_dim)
        idx, w = self.corner_indices_and_weights(x.float())
        out = _Interpolate.apply(self.table, idx.view(-1, 8), w.view(-1, 8))  # (N * L, F)
        return out.view(n, self.output_dim)


class TcnnHashGridEncoding(nn.Module):
    """tinycudann's fused HashGrid (CUDA only); float32 output so the rest of the field is unchanged.

    Its state dict holds the same `table` (P, F) as HashGridEncoding's, not tinycudann's flat
    `encoding.params`: the PyTorch grid copies tinycudann's memory layout (levels one after the
    other, the F features of an entry contiguous), so the two are one reshape apart and a run
    trained with either backend loads into the other (see canonical_table).
    """

    def __init__(self, cfg: HashGridConfig, seed: int | None = None):
        super().__init__()
        import tinycudann as tcnn  # imported lazily: CUDA-only package

        self.cfg = cfg
        self.encoding = tcnn.Encoding(3, cfg.tcnn_dict(), seed=seed if seed is not None else 1337)
        self.register_state_dict_post_hook(_tcnn_to_canonical)
        self.register_load_state_dict_pre_hook(_canonical_to_tcnn)

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x).float()


TCNN_PARAMS = "encoding.params"  # tinycudann's own key, relative to the encoding module


def table_size(cfg: HashGridConfig) -> int:
    """Entries of the concatenated tables (the table's first dimension)."""
    return sum(level_layout(cfg)[2])


def canonical_table(state: dict, prefix: str, cfg: HashGridConfig) -> None:
    """In place: a state dict in tinycudann's layout (flat `encoding.params`) gets our `table` (P, F).

    Works without tinycudann installed, so a GPU run's checkpoint written by an older version loads
    on the CPU."""
    flat = state.pop(prefix + TCNN_PARAMS, None)
    if flat is None:
        return
    expected = table_size(cfg) * cfg.n_features_per_level
    if flat.numel() != expected:
        raise ValueError(f"tinycudann parameters hold {flat.numel()} values, this encoding config needs {expected}")
    state[prefix + "table"] = flat.detach().float().reshape(-1, cfg.n_features_per_level)


def _tcnn_to_canonical(module: TcnnHashGridEncoding, state: dict, prefix: str, _meta) -> None:
    params = state.pop(prefix + TCNN_PARAMS)
    state[prefix + "table"] = params.float().reshape(-1, module.cfg.n_features_per_level)


def _canonical_to_tcnn(module: TcnnHashGridEncoding, state: dict, prefix: str, *_args) -> None:
    table = state.pop(prefix + "table", None)
    if table is not None:
        params = module.encoding.params
        state[prefix + TCNN_PARAMS] = table.reshape(-1).to(params.dtype)


def make_encoding(cfg: HashGridConfig, device: torch.device | str = "cpu", backend: str = "auto", seed: int | None = None) -> nn.Module:
    """tinycudann's encoding when the device is CUDA and tinycudann passes its probe (backend 'auto'),
    else PyTorch's. Both have the same state dict."""
    device = torch.device(device)
    if backend not in ("auto", "torch", "tcnn"):
        raise ConfigError(f"field.encoding_backend must be 'auto', 'torch' or 'tcnn', got {backend!r}")
    if backend == "tcnn" and (device.type != "cuda" or not tinycudann_available()):
        why = failure_reason("tinycudann") or "it needs a CUDA device"
        raise ConfigError(f"field.encoding_backend 'tcnn' cannot be used: {why} (see README's GPU section, or use 'auto')")
    use_tcnn = backend == "tcnn" or (backend == "auto" and device.type == "cuda" and tinycudann_available())
    if use_tcnn:
        return TcnnHashGridEncoding(cfg, seed).to(device)
    return HashGridEncoding(cfg, seed).to(device)
