"""Softmax."""
from __future__ import annotations

import torch

from builder.graph.registry import block


@block("softmax")
def softmax(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Softmax along one dimension (turns logits into probabilities)."""
    return torch.softmax(x, dim=dim)
