"""The position-wise feed-forward network of a transformer layer."""
from __future__ import annotations

import torch
from torch import nn

from blocks.activations import ACTIVATIONS
from builder.graph.registry import block


@block("feed_forward")
class FeedForward(nn.Module):
    """Position-wise feed-forward network: linear -> activation -> dropout -> linear."""

    def __init__(self, dim: int, hidden: int, activation: str = "relu", dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"feed_forward: unknown activation '{activation}'; known: {', '.join(sorted(ACTIVATIONS))}")
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None  # None: no module call on the hot path
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.fc2.residual_projection = True  # its output joins the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))  # (B, T, hidden)
        return self.fc2(h if self.drop is None else self.drop(h))  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"
