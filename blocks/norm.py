"""Layer normalisation, and RMS normalisation (the Llama family's)."""
from __future__ import annotations

import torch
from torch import nn

from builder.graph.registry import block


@block("layer_norm")
class LayerNorm(nn.LayerNorm):
    """Layer normalisation over the last dimension, with a trainable scale and (optional) bias."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__(dim, eps=eps, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)  # (..., dim)


@block("rms_norm")
class RMSNorm(nn.RMSNorm):
    """Root-mean-square normalisation over the last dimension: x / sqrt(mean(x^2) + eps) * scale (no shift)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)  # (..., dim)
