"""Output heads: class logits, and next-token logits whose weight can be tied to the token embedding."""
from __future__ import annotations

import torch
from torch import nn

from builder.graph.registry import block


@block("classifier_head")
class ClassifierHead(nn.Linear):
    """Linear layer producing class logits."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True):
        super().__init__(in_features, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)  # (..., num_classes)


@block("lm_head", vocabulary="vocab_size")
class LMHead(nn.Linear):
    """Linear layer producing vocabulary logits; `weight` is (vocab_size, dim), tieable to token_embedding.weight."""

    def __init__(self, dim: int, vocab_size: int, bias: bool = False):
        super().__init__(dim, vocab_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)  # (B, T, vocab_size)
