"""Fixed sinusoidal position encoding (Vaswani et al., 2017)."""
from __future__ import annotations

import math

import torch
from torch import nn

from blocks.embedding import positions
from builder.graph.registry import block


def sinusoid_table(max_len: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """pe[pos, 2i] = sin(pos / base^(2i/dim)), pe[pos, 2i+1] = cos(pos / base^(2i/dim))."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))  # (ceil(dim/2),)
    pe = torch.zeros(max_len, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])  # an odd dim has one sin column more than cos columns
    return pe  # (max_len, dim)


@block("sinusoidal_position", positions="max_len")
class SinusoidalPosition(nn.Module):
    """Fixed sin/cos position encoding: x (B, T) or (B, T, C) -> (1, T, dim), to be added to the embeddings."""

    def __init__(self, dim: int, max_len: int = 5000, base: float = 10000.0):
        super().__init__()
        self.max_len = max_len
        # not persistent: it is a function of the arguments, so checkpoints need not carry it
        self.register_buffer("pe", sinusoid_table(max_len, dim, base), persistent=False)  # (max_len, dim)

    def forward(self, x: torch.Tensor, state=None) -> torch.Tensor:
        offset, T = positions(x, state, self.max_len, "sinusoidal_position")
        rows = None if state is None else state.rows(T)  # left-padded prompts: each row's own positions
        pe = self.pe[rows] if rows is not None else self.pe[offset:offset + T].unsqueeze(0)  # (1 or B, T, dim)
        return pe.to(x.dtype) if x.is_floating_point() else pe
