"""Affine layer."""
from __future__ import annotations

import torch
from torch import nn

from builder.graph.registry import block


@block("linear")
class Linear(nn.Linear):
    """Affine map over the last dimension: x W^T + b."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)  # (..., out_features)
