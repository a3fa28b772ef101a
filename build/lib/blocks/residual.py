"""Residual connections: a plain add, and add & norm in post-norm (2017) or pre-norm (GPT-2) order."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from builder.graph.registry import block


@block("add")
def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of two tensors (broadcasting), e.g. a residual connection."""
    return x + y


@block("add_norm")
class AddNorm(nn.Module):
    """Residual add of a sub-layer output y to the stream x: post = LayerNorm(x + dropout(y)), pre = x + dropout(y).

    In "pre" order the normalisation belongs in front of the sub-layer (a layer_norm node), so no norm is created here.
    """

    def __init__(self, dim: int, order: Literal["post", "pre"] = "post", dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        if order not in ("post", "pre"):
            raise ValueError(f"add_norm: order must be 'post' or 'pre', got {order!r}")
        self.order = order
        self.drop = nn.Dropout(dropout) if dropout > 0 else None  # None: no dropout call on the hot path
        if order == "post":
            self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x + (self.drop(y) if self.drop is not None else y)  # (B, T, dim)
        return self.norm(h) if self.order == "post" else h

    def extra_repr(self) -> str:
        return f"order={self.order!r}"
