"""Fixed input standardisation, so raw feature values can be fed as they are."""
from __future__ import annotations

import torch
from torch import nn

from builder.graph.registry import block


@block("input_norm")
class InputNorm(nn.Module):
    """Fixed per-feature standardisation of the last dimension: (x - mean) / std (not trained)."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise ValueError(f"input_norm: mean and std need the same, non-zero length (got {len(mean)} and {len(std)})")
        if any(s <= 0 for s in std):
            raise ValueError(f"input_norm: every std must be > 0, got {list(std)}")
        # buffers: they follow .to(device) and are saved with the weights, but the optimiser never sees them
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))  # (C,)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (..., C)
