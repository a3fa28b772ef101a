"""Dropout."""
from __future__ import annotations

import torch
from torch import nn

from builder.graph.registry import block


@block("dropout")
class Dropout(nn.Dropout):
    """Zeroes elements with probability p during training and rescales the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.1):
        super().__init__(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if self.training and self.p > 0 else x  # same shape as x
