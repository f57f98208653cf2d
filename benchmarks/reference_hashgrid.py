"""A straightforward PyTorch hash grid: the reference our encoding is benchmarked and tested against.

One level at a time, one corner at a time, autograd through plain indexing: the way most
pure-PyTorch NeRF code writes it. Same layout, hashing and parameters as HashGridEncoding, so the
two give identical outputs for the same table.
"""
from __future__ import annotations

import torch
from torch import nn

from dreamfusion.field.encoding import PRIMES, HashGridConfig, level_layout


class ReferenceHashGrid(nn.Module):
    def __init__(self, cfg: HashGridConfig, table: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.scales, self.resolutions, self.sizes, self.dense = level_layout(cfg)
        self.table = nn.Parameter(table.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, offset = [], 0
        for scale, res, size, dense in zip(self.scales, self.resolutions, self.sizes, self.dense):
            pos = x * scale + 0.5
            grid = torch.floor(pos)
            frac = pos - grid
            grid = grid.long()
            level = torch.zeros(x.shape[0], self.cfg.n_features_per_level, dtype=x.dtype, device=x.device)
            for corner in range(8):
                bits = [(corner >> 2) & 1, (corner >> 1) & 1, corner & 1]
                c = [grid[:, d] + bits[d] for d in range(3)]
                if dense:
                    index = c[0] + c[1] * res + c[2] * res * res
                else:
                    index = ((c[0] * PRIMES[0]) ^ (c[1] * PRIMES[1]) ^ (c[2] * PRIMES[2])) & 0xFFFFFFFF
                index = index % size + offset
                weight = torch.ones_like(frac[:, 0])
                for d in range(3):
                    weight = weight * (frac[:, d] if bits[d] else 1.0 - frac[:, d])
                level = level + weight.unsqueeze(-1) * self.table[index]
            outputs.append(level)
            offset += size
        return torch.cat(outputs, dim=-1)
