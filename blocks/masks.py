"""Padding masks: Hugging Face's attention mask (1 = token, 0 = padding) -> the attention blocks' pad_mask."""
from __future__ import annotations

import torch

from builder.graph.registry import block


@block("padding_mask")
def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """An attention mask (B, S), 1 at tokens and 0 at padding (int or bool) -> bool (B, S), True at padding, the
    pad_mask of self_attention and pool."""
    return attention_mask == 0  # (B, S)
