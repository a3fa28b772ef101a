"""Learned embeddings: token ids -> vectors, and absolute positions -> vectors."""
from __future__ import annotations

import math

import torch
from torch import nn

from builder.graph.registry import block


@block("token_embedding", vocabulary="num_embeddings")
class TokenEmbedding(nn.Embedding):
    """Learned token embedding: ids (B, T) -> vectors (B, T, dim); scale=True multiplies by sqrt(dim) (2017 paper)."""

    def __init__(self, num_embeddings: int, dim: int, scale: bool = False):
        super().__init__(num_embeddings, dim)
        self.multiplier = math.sqrt(dim) if scale else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = super().forward(x)  # (B, T, dim)
        return e * self.multiplier if self.multiplier != 1.0 else e


def positions(x: torch.Tensor, state, max_len: int, name: str) -> tuple[int, int]:
    """(offset, T) of this call's positions; raises if they run past the table."""
    offset = 0 if state is None else state.offset
    T = x.shape[1]
    if offset + T > max_len:
        raise ValueError(f"{name}: positions {offset}..{offset + T - 1} exceed max_len={max_len}; "
                         f"raise max_len or feed shorter sequences")
    return offset, T


@block("position_embedding", positions="max_len")
class PositionEmbedding(nn.Embedding):
    """Learned absolute position embedding: ids (B, T) -> (1, T, dim) ((B, T, dim) for left-padded decoding),
    to be added to the token embedding."""

    def __init__(self, max_len: int, dim: int):
        super().__init__(max_len, dim)

    def forward(self, x: torch.Tensor, state=None) -> torch.Tensor:
        offset, T = positions(x, state, self.num_embeddings, "position_embedding")
        rows = None if state is None else state.rows(T)  # left-padded prompts: each row's own positions
        if rows is not None:
            return self.weight[rows]  # (B, T, dim)
        return self.weight[offset:offset + T].unsqueeze(0)  # (1, T, dim): rows offset .. offset+T-1
